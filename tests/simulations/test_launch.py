"""`flwr run` end to end, as users run it: each run on its own SuperLink, several at once,
the real status from `flwr ls`, and nothing stopped that the run did not start."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from bouquet import provenance
from bouquet.simulations.launch import REPO, SuperLink, federation_config, launch

DIGITS = {"dataset": "digits", "partitioner": "iid", "method": "fedavg", "num-server-rounds": 2}


def test_federation_config_gives_flower_an_integer_cpu_count():
    # `client-resources-num-cpus=1.0` is what broke `--cpus-per-client 1`
    assert federation_config(5, 1, 0.0, False) == \
        "num-supernodes=5 client-resources-num-cpus=1 client-resources-num-gpus=0.0"
    assert federation_config(2, 2, 0.5, True).endswith("client-resources-num-gpus=0.5 verbose=true")


def test_superlink_stops_only_what_it_started(tmp_path):
    link = SuperLink(say=lambda *_: None)
    link.start()
    pid, home, port = link.proc.pid, link.home, link.port
    assert (home / "config.toml").read_text().count(f"127.0.0.1:{port}") == 1
    link.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not home.exists()


def test_concurrent_runs_complete_and_a_bad_one_fails_naming_the_key(tmp_path):
    # a stand-in for another user's SuperLink: a listener this test started, which no run may touch
    foreign = subprocess.Popen([sys.executable, "-c", (
        "import socket,time;s=socket.socket();s.bind(('127.0.0.1',0));s.listen();"
        "print(s.getsockname()[1],flush=True);time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    foreign_port = int(foreign.stdout.readline())
    try:
        jobs = [({**DIGITS, "seed": s, "output-dir": str(tmp_path / f"out{s}")}, 2) for s in (0, 1)]
        jobs.append(({**DIGITS, "dirichlet-alpha": -1.0, "output-dir": str(tmp_path / "bad")}, 1))
        with ThreadPoolExecutor(len(jobs)) as pool:
            futures = [pool.submit(launch, cfg, num_supernodes=k, echo=False, timeout=500) for cfg, k in jobs]
            time.sleep(1)
            results = [f.result() for f in futures]
        for (cfg, _), res in zip(jobs[:2], results[:2], strict=True):
            assert res.ok, res.output[-3000:]
            [summary] = [json.loads(p.read_text()) for p in (tmp_path / f"out{cfg['seed']}").glob("*/summary.json")]
            assert summary["rounds_completed"] == 2 and summary["seed"] == cfg["seed"]
            # the FAB's staged copy is no checkout: it carried which commit it is
            assert summary["code"] == provenance.of_checkout(REPO)
        bad = results[2]
        assert bad.status == "finished:failed"
        assert bad.reason.startswith("dirichlet-alpha=-1.0 is out of range")  # the line `bouquet run` prints last
        assert "[ROUND 1" not in bad.output and not (tmp_path / "bad").exists()
        assert foreign.poll() is None  # still running
        with socket.create_connection(("127.0.0.1", foreign_port), timeout=5):
            pass  # still listening
    finally:
        foreign.kill()


def test_staged_app_holds_the_package_and_nothing_else(tmp_path):
    """The FAB is built from a copy of pyproject.toml, README.md and the package the components
    name: never the venv or results beside them, never caches."""
    from bouquet.simulations.launch import stage_app

    app = stage_app(REPO, tmp_path / "app")
    top = sorted(p.name for p in app.iterdir())
    assert top == ["README.md", "bouquet", "pyproject.toml"], top
    assert (app / "bouquet" / "client_app.py").read_bytes() == (REPO / "bouquet" / "client_app.py").read_bytes()
    assert not list(app.rglob("__pycache__")) and not list(app.rglob("*.pyc"))
    expected = {p.relative_to(REPO) for p in (REPO / "bouquet").rglob("*.py")} | {Path("bouquet", provenance.FILE)}
    assert {p.relative_to(app) for p in (app / "bouquet").rglob("*.py")} == expected
    assert provenance.read_stamp(app / "bouquet" / provenance.FILE) == provenance.of_checkout(REPO)
