"""`bouquet run --ray-address`: the simulation joins an existing Ray cluster (a head and one
worker node that this test starts with `ray start` on loopback) instead of starting a Ray of
its own, and the test stops exactly the Ray processes it started (never `ray stop`, which
would stop every Ray of this user on the machine, e.g. a sweep's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from bouquet import cli
from bouquet.simulations.launch import RayNode, free_port, parse_ray_address

# Run in a subprocess that joins the cluster as a driver of its own: the nodes, and every actor
# the cluster ran (the GCS keeps finished jobs' actors), with the node each one was placed on.
QUERY = """
import json, sys
import ray
from ray._private import state
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
actors = [{"class": a["ActorClassName"], "node": a["Address"]["NodeID"], "job": a["JobID"]}
          for a in state.actors().values()]
print("QUERY " + json.dumps({"nodes": nodes, "actors": actors}))
ray.shutdown()
"""


def _gone(node: RayNode) -> None:
    """Nothing runs from the node's temp dir once it is stopped (its whole process tree went)."""
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if str(node.temp_dir) in " ".join(p.info["cmdline"] or [])]
    assert not left, f"Ray processes of this test still running: {left}"


@pytest.fixture(scope="module")
def ray_cluster():
    """A two-node Ray cluster on 127.0.0.1 (1 CPU each), each node in a temp dir of its own (so
    that no other `ray.init()` on this machine finds it through /tmp/ray/ray_current_cluster)."""
    small = ("--object-store-memory=100000000",)
    t0 = time.monotonic()
    with RayNode(num_cpus=1, extra=small) as head:
        with RayNode(num_cpus=1, address=head.address, extra=small) as worker:
            print(f"[test] Ray head {head.address} and one worker node up in {time.monotonic() - t0:.1f} s")
            yield head.address
        _gone(worker)
    _gone(head)


def _cluster_state(address: str) -> dict:
    out = subprocess.run([sys.executable, "-c", QUERY, address], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("QUERY ")]
    assert line, out.stdout[-2000:] + out.stderr[-3000:]
    return json.loads(line[-1][len("QUERY "):])


def test_run_on_an_existing_ray_cluster_uses_its_nodes(ray_cluster, tmp_path):
    before = _cluster_state(ray_cluster)
    assert len(before["nodes"]) == 2 and not [a for a in before["actors"] if "ClientAppActor" in a["class"]]
    t0 = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "bouquet.cli", "run", "-q", "--ray-address", ray_cluster, "--num-supernodes", "2",
         "--run-config", "method='fedavg' dataset='fashion-mnist' partitioner='iid' num-server-rounds=2 "
         f"data-fraction=0.02 batch-size=32 output-dir='{tmp_path}'"],
        capture_output=True, text=True, timeout=900)
    print(f"[test] bouquet run on the cluster: {time.monotonic() - t0:.1f} s")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.rstrip().splitlines()[-1].endswith(": finished:completed")
    assert f"joins the Ray cluster at {ray_cluster}" in run.stdout
    [summary] = [json.loads(p.read_text()) for p in tmp_path.glob("*/summary.json")]
    assert summary["rounds_completed"] == 2
    assert 0.1 < summary["final"]["global_model@global_test"] <= 1.0  # 10 classes: chance 0.1

    after = _cluster_state(ray_cluster)
    assert after["nodes"] == before["nodes"]  # the same two nodes, still up
    clients = [a for a in after["actors"] if "ClientAppActor" in a["class"]]
    # 2 clients × 1 CPU on two 1-CPU nodes: Flower's actor pool used both nodes of this cluster
    assert {a["node"] for a in clients} == set(before["nodes"]), clients


def test_ray_address_is_checked_before_anything_starts(capsys):
    assert parse_ray_address(" 10.0.0.5:6379 ") == "10.0.0.5:6379"
    assert parse_ray_address("[::1]:6379") == "[::1]:6379"
    for bad in ("10.0.0.5", "ray://10.0.0.5:10001", "auto", "head:0", "head:70000", "[zz]:1", ":6379"):
        with pytest.raises(ValueError):
            parse_ray_address(bad)
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--ray-address", "10.0.0.5", "--check"])
    assert exc.value.code == 2
    assert "argument --ray-address: '10.0.0.5' is not HOST:PORT" in capsys.readouterr().err
    port = free_port()  # nobody listens there
    assert cli.main(["run", "--ray-address", f"127.0.0.1:{port}", "--check"]) == 2
    assert f"--ray-address: no Ray head answers at 127.0.0.1:{port}" in capsys.readouterr().err
