"""docker/e2e.sh without an engine: it must say why it skipped, as its last line, and exit 0.

The run itself (images, TLS + auth deployment, 3 rounds, a SuperNode killed, about 5 minutes
with the images built) is CI's: .ci/run calls docker/e2e.sh. ``BOUQUET_DOCKER_E2E=1`` runs it
from here too (``test_e2e_run``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

E2E = Path(__file__).resolve().parents[2] / "docker" / "e2e.sh"


def _bin(folder: Path, tools: dict[str, str]) -> Path:
    """A PATH folder with only the system tools e2e.sh needs before it looks for Docker, plus
    the given fake ones."""
    folder.mkdir()
    for tool in ("bash", "id", "dirname", "date", "sed", "grep", "seq", "sleep", "rm", "mktemp", "tail", "cat"):
        if path := shutil.which(tool):
            (folder / tool).symlink_to(path)
    for name, script in tools.items():
        (folder / name).write_text(f"#!{shutil.which('sh')}\n{script}\n")
        (folder / name).chmod(0o755)
    return folder


def _run(path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(path / "bash"), str(E2E)], env={"PATH": str(path), "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)


def test_skips_without_a_docker_cli(tmp_path):
    proc = _run(_bin(tmp_path / "bin", {}), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "[e2e] skipped: no docker CLI (Debian: apt-get install docker.io)"


def test_skips_when_no_daemon_is_reachable_and_none_can_start(tmp_path):
    proc = _run(_bin(tmp_path / "bin", {"docker": "echo 'Cannot connect to the Docker daemon' >&2; exit 1"}), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.splitlines()[-1]
    assert last in ("[e2e] skipped: no Docker daemon reachable, and not root to start one",
                    "[e2e] skipped: no Docker daemon reachable and no dockerd to start"), proc.stdout


def test_skips_when_dockerd_cannot_start(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("e2e.sh only starts dockerd as root")
    proc = _run(_bin(tmp_path / "bin", {"docker": "exit 1", "dockerd": "echo 'failed to start daemon: no cgroups' >&2; exit 1"}),
                tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "[e2e] skipped: dockerd could not start: failed to start daemon: no cgroups"


@pytest.mark.skipif(os.environ.get("BOUQUET_DOCKER_E2E") != "1", reason="the real run is CI's (.ci/run); BOUQUET_DOCKER_E2E=1 runs it")
def test_e2e_run():
    proc = subprocess.run(["bash", str(E2E)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1].startswith("[e2e] OK"), proc.stdout[-5000:] + proc.stderr[-2000:]
