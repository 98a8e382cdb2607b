"""`bouquet run` killed with SIGTERM (a scheduler, `timeout`, `kill`) stops what it started:
its private SuperLink, the simulation and Ray are gone when it exits, as after Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest


RUN = ("run", "-q", "--num-supernodes", "2", "--run-config",
       "method='fedavg' dataset='digits' partitioner='iid' num-server-rounds=500 output-dir='{out}'")
# a sweep: its Ray head (one for the sweep, bouquet.simulations.launch.RayNode) must go too
SWEEP = ("reproduce", "fedkper", "--quick", "--methods", "fedavg", "--run-config", "num-server-rounds=500",
         "--out", "{out}")


@pytest.mark.parametrize(("args", "said"), [(RUN, "interrupted: the run and its SuperLink were stopped"),
                                            (SWEEP, "interrupted: the sweep's own SuperLink and Ray head (if it started one) were stopped")],
                         ids=["run", "reproduce"])
def test_sigterm_stops_the_superlink_the_simulation_and_ray(tmp_path, args, said):
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bouquet.cli", *(a.format(out=tmp_path) for a in args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    root = psutil.Process(proc.pid)
    seen: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not any("ClientAppActor" in " ".join(p.cmdline()) for p in seen.values()
                                                   if _alive(p)):
        for p in root.children(recursive=True):
            seen.setdefault(p.pid, p)
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.5)
    for p in root.children(recursive=True):
        seen.setdefault(p.pid, p)
    assert any("flower-superlink" in " ".join(_cmd(p)) for p in seen.values()), "no SuperLink seen"
    if args is SWEEP:
        assert any("bqray-" in " ".join(_cmd(p)) for p in seen.values()), "no Ray head of the sweep seen"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:]
    assert said in out
    _, alive = psutil.wait_procs(list(seen.values()), timeout=30)
    left = [(p.pid, " ".join(_cmd(p))[:80]) for p in alive if _alive(p)]
    assert not left, f"still running after SIGTERM: {left}"


def _cmd(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
