"""A deployed SuperNode starts a fresh ClientApp process for every message, so what
``import bouquet.client_app`` pulls in is paid on every message: keep it to torch and flwr."""

import subprocess
import sys

HEAVY = ("sklearn", "pandas", "scipy", "torch_geometric", "networkx", "flwr_datasets", "matplotlib", "ray")


def test_client_app_import_leaves_heavy_libraries_to_the_code_that_needs_them():
    probe = f"import sys, bouquet.client_app; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""
