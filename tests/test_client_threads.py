"""The ClientApp module must not change the torch thread count of the process that imports it:
Flower's simulation imports it in the process that runs the ServerApp, whose evaluation should
use every core; a client sets one thread when it first works (bouquet.client_app)."""

import subprocess
import sys

CHECK = """
import torch
torch.set_num_threads(2)
import bouquet.client_app as ca
assert torch.get_num_threads() == 2, f"import changed the thread count to {torch.get_num_threads()}"
ca._client_process()
assert torch.get_num_threads() == 1, torch.get_num_threads()
print("OK")
"""


def test_import_keeps_threads_and_a_working_client_uses_one():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stdout + out.stderr
