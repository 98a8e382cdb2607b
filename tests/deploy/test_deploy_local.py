"""Real SuperLink/SuperNode processes on 127.0.0.1 (``bouquet deploy-local``), each test
bounded in time and cleaned up by PID."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bouquet.deploy.local import deploy, flwr_run, make_node_key, start_supernode, stop, _alive

REPO = Path(__file__).resolve().parents[2]
DATA = os.environ.get("BOUQUET_DATA", str(REPO.parent / "shared" / "data"))
# fraction-evaluate=0: a deployed message costs a new ClientApp process (seconds), and these tests are
# about the deployment, not about client-side evaluation, which the simulation tests cover
RUN = {"method": "fedavg", "dataset": "digits", "partitioner": "iid", "batch-size": 32, "data-dir": DATA,
       "fraction-evaluate": 0.0}


@pytest.fixture
def folder(tmp_path):
    yield tmp_path / "deploy"
    stop(tmp_path / "deploy")  # whatever a failing test left running


def test_tls_and_node_auth_three_nodes_complete_a_run_despite_a_dishonest_node_and_outsiders(
        folder, tmp_path, monkeypatch):
    import json

    # partition 1's own machine is compromised: it claims 1e12 examples (full model replacement under FedAvg)
    monkeypatch.setenv("BOUQUET_ADVERSARY", "num-examples:1e12@1")
    dep = deploy(folder, 3, tls=True, auth=True)
    assert (folder / "certificates" / "server.pem").exists() and (folder / "keys" / "supernode_2.pub").exists()
    assert "root-certificates" in (dep.home / "config.toml").read_text()
    result = flwr_run(dep, REPO, {**RUN, "num-server-rounds": 2, "output-dir": str(tmp_path / "out")}, timeout=400)
    assert result.status == "finished:completed", result.output[-3000:]
    [summary] = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*/summary.json")]
    assert [(r["round"], r["partition_id"]) for r in summary["rejected_updates"]] == [(1, 1), (2, 1)]
    assert "num-examples" in summary["rejected_updates"][0]["reason"]

    # an outsider with the public CA certificate and the address institutions get (the Fleet gateway)
    outsider = tmp_path / "outsider-home"
    outsider.mkdir()
    (outsider / "config.toml").write_text(
        f'[superlink]\ndefault = "x"\n\n[superlink.x]\naddress = "127.0.0.1:{dep.port}"\n'
        f'root-certificates = "{folder / "certificates" / "ca.crt"}"\n')
    own_key = make_node_key(tmp_path / "outsider-keys", "rogue")
    flwr = str(Path(sys.executable).with_name("flwr"))
    for cmd in (["supernode", "register", str(own_key.with_suffix(".pub"))], ["supernode", "list"], ["ls"]):
        out = subprocess.run([flwr, *cmd], env={**os.environ, "FLWR_HOME": str(outsider)}, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "403" in out.stdout + out.stderr, (cmd, out.stdout[-800:])
    # the operator's CLI (loopback SuperLink) still lists the three institutions, and only them
    listed = subprocess.run([flwr, "supernode", "list", "--format", "json"], env=dep.env(), cwd=folder,
                            capture_output=True, text=True, timeout=60)
    assert len(json.loads(listed.stdout)["nodes"]) == 3, listed.stdout[-800:]
    # every ClientApp task went through the warm zygote (bouquet.deploy.superexec), none cold
    for i in range(3):
        log = (folder / "logs" / f"supernode-{i}-superexec.log").read_text()
        assert "[warm-superexec] ready" in log and log.count("forked warm") >= 2 and "launched cold" not in log, log[-2000:]
    pids = dict(dep.pids)
    assert set(stop(folder)) == {"superlink", "gateway", *(f"supernode-{i}{s}" for i in range(3) for s in ("", "-superexec"))}
    assert not any(_alive(pid) for pid in pids.values())


def test_unregistered_supernode_is_refused(folder):
    dep = deploy(folder, 1, tls=True, auth=True)
    stranger = make_node_key(folder / "keys", "stranger")  # never registered
    proc = start_supernode(dep, 1, 2, ca=folder / "certificates" / "ca.crt", key=stranger, name="stranger")
    try:
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (folder / "logs" / "stranger.log").read_text()
    assert "Failed to activate SuperNode" in log or "PERMISSION_DENIED" in log.upper() or "denied" in log.lower(), log[-2000:]


def test_a_supernode_killed_in_round_2_does_not_stop_the_run(folder, tmp_path):
    dep = deploy(folder, 3, tls=False, auth=False)
    out = tmp_path / "out"
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("r", flwr_run(
        dep, REPO, {**RUN, "num-server-rounds": 4, "round-timeout": 180.0, "output-dir": str(out)}, timeout=540)))
    runner.start()
    victim = dep.pids["supernode-1"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # round 1 is over once its server-side row is written
        rows = [r for f in out.glob("*/metrics.csv") for r in csv.DictReader(f.open())]
        if any(r["round"] == "1" and r["partition_id"] == "" and r["metric"] == "global_model@global_test" for r in rows):
            break
        time.sleep(0.5)
    else:
        pytest.fail("round 1 never finished")
    import psutil
    # killed while a ClientApp forked by its SuperExec's zygote runs (not in the SuperNode's group)
    deadline = time.monotonic() + 120
    while len(forked := psutil.Process(dep.pids["supernode-1-superexec"]).children(recursive=True)) < 2:
        assert time.monotonic() < deadline, "no ClientApp of supernode-1 ran after round 1"
        time.sleep(0.05)
    os.killpg(victim, 9)  # the SuperNode and its ClientApp processes, no goodbye
    runner.join(timeout=560)
    res = result["r"]
    assert res.status == "finished:completed", res.output[-3000:]
    assert "partition 1 (node" in res.output and "is missing" in res.output
    # the killed SuperNode's SuperExec followed it (Flower's parent-pid watch), and its zygote with it
    deadline = time.monotonic() + 30
    while _alive(dep.pids["supernode-1-superexec"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(dep.pids["supernode-1-superexec"])
    # nothing it started outlives it, though the SuperExec is a zombie until this test's end
    deadline = time.monotonic() + 30
    while any(_alive(p.pid) for p in forked) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p.pid) for p in forked)
    [metrics] = out.glob("*/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    server_rounds = {r["round"] for r in rows if r["partition_id"] == "" and r["metric"] == "global_model@global_test"}
    assert server_rounds == {"0", "1", "2", "3", "4"}
    late = {r["partition_id"] for r in rows if r["round"] in ("3", "4") and r["metric"] == "train_loss" and r["partition_id"]}
    assert late == {"0", "2"}  # the others went on without it


def test_flowers_own_superexec_still_completes_a_run(folder, tmp_path):
    """``--superexec flower``: Flower starts a fresh ClientApp process per message, no zygote."""
    dep = deploy(folder, 2, tls=False, auth=False, warm=False)
    result = flwr_run(dep, REPO, {**RUN, "num-server-rounds": 1, "output-dir": str(tmp_path / "out")}, timeout=300)
    assert result.status == "finished:completed", result.output[-3000:]
    assert sorted(dep.pids) == ["gateway", "superlink", "supernode-0", "supernode-1"]


def test_server_stopped_after_round_2_resumes_to_the_uninterrupted_result(folder, tmp_path):
    """The run is stopped on the server side once round 2 is checkpointed (it may get one or two
    rounds further before the stop lands), resumed with
    ``resume-from``, and compared with an uninterrupted simulation of the same seed (deployment
    and simulation give identical numbers for the same seed)."""
    import json

    from bouquet import checkpoint
    from tests.simulation import simulate

    dep = deploy(folder, 3, tls=False, auth=False)
    out = tmp_path / "out"
    rounds = 5  # the stop lands after round 2's checkpoint and before the last round, whatever the speed
    cfg = {**RUN, "num-server-rounds": rounds, "seed": 5, "output-dir": str(out)}
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("r", flwr_run(dep, REPO, cfg, timeout=500)))
    runner.start()
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and not any(
            json.loads(p.read_text())["round"] >= 2 for p in out.glob("*/checkpoint/round.json")):
        time.sleep(0.5)
    listing = subprocess.run([str(Path(sys.executable).with_name("flwr")), "ls", "--format", "json"],
                             env=dep.env(), cwd=folder, capture_output=True, text=True, timeout=60)
    [running] = [r["run-id"] for r in json.loads(listing.stdout)["runs"] if r["status"] == "running"]
    subprocess.run([str(Path(sys.executable).with_name("flwr")), "stop", str(running)], env=dep.env(), cwd=folder,
                   capture_output=True, timeout=60)
    runner.join(timeout=520)
    assert result["r"].status != "finished:completed"
    [run_dir] = out.iterdir()
    stopped_at = checkpoint.load(run_dir).round
    assert 2 <= stopped_at < rounds

    resumed = flwr_run(dep, REPO, {**cfg, "resume-from": str(run_dir)}, timeout=400)
    assert resumed.status == "finished:completed", resumed.output[-3000:]
    reference = simulate(tmp_path / "sim", 3, **{**cfg, "output-dir": str(tmp_path / "sim")})

    def rows(run):
        return sorted(tuple(r.values()) for r in csv.DictReader((Path(run) / "metrics.csv").open()))

    # every row, clients' included: their state came back from the nodes' own state-dir
    assert rows(run_dir) == rows(reference["run_dir"])
    assert {r[0] for r in rows(run_dir)} == {str(r) for r in range(rounds + 1)}
    assert sorted(p.name for p in (dep.folder / "state" / "node-0" / run_dir.name / "client-0").iterdir()) == \
        [f"r{rounds - 1:05d}.npz", f"r{rounds:05d}.npz"]
    ours, ref = checkpoint.load(run_dir), checkpoint.load(Path(reference["run_dir"]))
    assert ours.round == ref.round == rounds
    assert all((ours.arrays[k] == ref.arrays[k]).all() for k in ref.arrays)


def test_a_local_stranger_cannot_take_a_supernodes_tasks(folder):
    """The SuperNode's Runtime API (loopback, no TLS) hands out task tokens; with the warm SuperExec
    it serves only the holder of the 0600 secret deploy-local wrote for the pair."""
    import httpx
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.runtime import RuntimeHttpClient

    dep = deploy(folder, 1, tls=False, auth=False)
    secret = folder / "secrets" / "supernode-0.superexec"
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_bytes()) == 32
    cmd = open(f"/proc/{dep.pids['supernode-0-superexec']}/cmdline").read().split("\0")
    address = cmd[cmd.index("--runtime-api-address") + 1]
    stranger = RuntimeHttpClient.from_server_address(server_address=address, insecure=True, root_certificates=None,
                                                     interceptors=[], retry_invoker=None)
    deadline = time.monotonic() + 60
    while True:  # until the SuperNode's Runtime API is up
        try:
            stranger.AcquireTask(AcquireTaskRequest(supported_task_types=["clientapp"]))
            pytest.fail("a process without the secret was served by the Runtime API")
        except httpx.HTTPStatusError as exc:
            assert exc.response.status_code == 401
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the SuperNode's Runtime API never came up"
            time.sleep(0.5)
