"""deploy-local's bookkeeping, without starting a deployment."""

from __future__ import annotations

import pytest


def test_deploy_local_tells_the_server_how_many_nodes_it_started(tmp_path):
    from bouquet.config import RunConfig
    from bouquet.deploy.local import Deployment

    dep = Deployment(tmp_path, 1, False, False, pids={"supernode-0": 11, "supernode-0-superexec": 12, "supernode-1": 13,
                                                     "supernode-1-superexec": 14, "superlink": 10})
    assert dep.num_nodes == 2 and "federation-size=2" in dep.run_command(tmp_path)
    with pytest.raises(Exception, match="federation-size"):
        RunConfig.from_run_config({"federation-size": -1})


def test_stopping_a_deployment_signals_only_processes_it_started(tmp_path):
    """processes.json left behind: a recorded pid that another process now holds is not signalled."""
    import subprocess
    import sys

    from bouquet.deploy.local import Deployment, stop

    folder = (tmp_path / "dep").resolve()
    folder.mkdir()
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=folder, start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path, start_new_session=True)
    try:
        Deployment(folder, 1, False, False, pids={"supernode-0": ours.pid, "gateway": other.pid}).save()
        assert stop(folder, grace_s=5) == ["supernode-0"]
        assert ours.wait(timeout=10) is not None and other.poll() is None
    finally:
        other.kill()
        ours.kill()


def test_stop_with_a_folder_that_does_not_exist_is_an_error(tmp_path, capsys):
    from bouquet.deploy.local import main

    with pytest.raises(SystemExit) as exc:
        main(["--stop", "--dir", str(tmp_path / "typo")])
    assert exc.value.code == 2 and "no such folder" in capsys.readouterr().err
    assert main(["--stop", "--dir", str(tmp_path)]) == 0  # an existing folder with nothing running: harmless


def test_the_fab_of_the_repository_carries_the_package_and_nothing_else():
    """`flwr run .` (deployment, the docker demo) ships this FAB to every ClientApp process, which
    unzips and hashes all of it per message: docs/results and tests made that 12 MB, 1.4 s a message."""
    import io
    import zipfile
    from pathlib import Path

    from flwr.cli.build import build_fab_from_disk

    repo = Path(__file__).resolve().parents[2]
    names = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(repo))).namelist()
    assert "bouquet/client_app.py" in names and "bouquet/server_app.py" in names and "pyproject.toml" in names
    package = {p.relative_to(repo).as_posix() for p in (repo / "bouquet").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert package <= set(names)  # every file of the package (a data file beside the code would be dropped)
    assert set(names) - package == {"pyproject.toml", "README.md", ".info/CONTENT"}


def test_every_flower_process_bouquet_starts_has_telemetry_and_the_update_check_off(tmp_path):
    """Flower posts an event to telemetry.flower.ai when any of its processes starts and ends,
    every ClientApp included; nothing Bouquet starts may call out (traffic stays on 127.0.0.1)."""
    from bouquet.deploy.local import Deployment
    from bouquet.simulations.launch import RayNode, flwr_env

    dep = Deployment(tmp_path, 1, False, False)
    head = RayNode(num_cpus=1, temp_dir=tmp_path / "ray")
    for env in (flwr_env(tmp_path), dep.env(), head.environment()):
        assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
