"""Logical clients on few SuperNodes (bouquet.multiplex): the batch format, its failure modes,
and the promise that every method computes exactly what it computes with one SuperNode per
client (identical metrics.csv), also when clients move between SuperNodes every round."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from bouquet import multiplex
from bouquet.federation import ClientDirectory
from bouquet.multiplex import LogicalDirectory, assign, pack, pack_replies, split_replies, unpack
from bouquet.registry import METHODS
from tests.inprocess import run_in_process


def _arrays(value: float) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.full(3, value, dtype=np.float32))})


def test_a_record_shared_by_the_batch_travels_once_and_unpacks_to_each_client():
    shared, own = _arrays(1.0), _arrays(2.0)
    contents = [(5, RecordDict({"arrays": shared, "config": ConfigRecord({"server-round": 3})})),
                (9, RecordDict({"arrays": shared, "extra": own}))]
    packed = pack(contents)
    assert len(packed.array_records) == 2  # shared once + own, not three
    back = dict(unpack(packed))
    assert set(back) == {5, 9}
    assert back[5]["config"]["server-round"] == 3 and "extra" not in back[5]
    np.testing.assert_array_equal(back[9]["extra"]["w"].numpy(), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(back[9]["arrays"]["w"].numpy(), back[5]["arrays"]["w"].numpy())


def test_replies_split_per_client_errors_stay_with_their_client_and_forged_ids_are_ignored():
    ok = RecordDict({"metrics": MetricRecord({"num-examples": 4.0}), "arrays": _arrays(0.5)})
    content = pack_replies([(1, ok, ""), (2, None, "RuntimeError: boom"), (77, ok, "")])
    parts = split_replies(content, expected=[1, 2, 3])
    assert set(parts) == {1, 2}  # 3 not answered (missing), 77 never asked (ignored)
    assert parts[2] == "RuntimeError: boom"
    assert parts[1]["metrics"]["num-examples"] == 4.0 and set(parts[1]) == {"metrics", "arrays"}


@pytest.mark.parametrize("mux", [None, ConfigRecord({"cids": [1, 2]}), ConfigRecord({"cids": ["x"], "errors": [""]})])
def test_a_malformed_batch_reply_is_an_error_for_every_client_of_the_batch(mux):
    content = RecordDict({"metrics": MetricRecord({"a": 1.0})})
    if mux is not None:
        content[multiplex.MUX] = mux
    parts = split_replies(content, expected=[1, 2])
    assert set(parts) == {1, 2} and all(isinstance(p, str) and "malformed" in p for p in parts.values())


def test_assignment_is_balanced_covers_every_client_once_and_rotates_with_the_round():
    pids = list(range(0, 100, 3))  # 34 clients
    batches = assign(pids, [11, 12, 13], server_round=1)
    assert sorted(p for b in batches.values() for p in b) == pids
    assert max(map(len, batches.values())) - min(map(len, batches.values())) <= 1
    moved = assign(pids, [11, 12, 13], server_round=2)
    assert moved != batches  # a client is not tied to one SuperNode


def test_the_population_is_a_range_never_a_list():
    directory = LogicalDirectory(1_000_000, ClientDirectory({101: 0}, 1))
    assert isinstance(directory.nodes_sorted(), range) and len(directory.nodes_sorted()) == 1_000_000
    assert directory.pid(1) == 0 and directory.pid(1_000_000) == 999_999
    assert directory.pid(0) == -1 and directory.pid(1_000_001) == -1  # a physical or forged id is nobody


# Each registered method, tiny: 4 clients, a sample of 3 a round (seeded), 2 rounds (GeFL: its phases);
# the smallest data each method accepts (digits: 1,797 rows; MNIST's 2,000-image test set for the 10 CNNs).
_IMAGES = {"dataset": "fashion-mnist", "partitioner": "iid", "data-fraction": 0.02, "batch-size": 32}
_SMALL = {"dataset": "digits", "partitioner": "iid", "batch-size": 32}
_HETERO = {"dataset": "mnist", "partitioner": "iid", "data-fraction": 0.05, "batch-size": 32}
_GRAPH = {"dataset": "cora", "partitioner": "louvain"}
_SETTINGS = {
    "fedlog": {**_GRAPH, "fedlog-pretrain-epochs": 2, "fedlog-num-proto": 4},
    "fedpub": {**_GRAPH, "fedpub-n-proxy": 2},
    "uls": {"dp-noise-multiplier": 1.0, "dp-sampling-rate": 0.75},
    "els": {"dp-noise-multiplier": 2.0, "dp-sampling-rate": 0.5, "dp-k": 4},
    "gefl": {"gefl-gen-rounds": 1, "gefl-gen-epochs": 1, "gefl-gen-width": 32, "num-server-rounds": 2},
    "gefl-f": {"gefl-fe-rounds": 1, "gefl-gen-rounds": 1, "gefl-gen-epochs": 1, "gefl-gen-width": 32,
               "num-server-rounds": 3},
    # one SSL warm-up round, then GCD; FedLPA discovers (kNN graph + InfoMap) in round 2
    **{m: {"gcd-ssl-rounds": 1, "gcd-width": 8, "fedlpa-warmup-rounds": 0, "fedlpa-every": 1, "fedlpa-knn": 10}
       for m in ("fedlpa", "simgcd", "gcd", "local-simgcd")},
}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_computes_the_same_with_logical_clients_as_with_a_supernode_each(tmp_path, method):
    data = _SMALL if "digits" in METHODS[method].datasets else _HETERO
    config = {"method": method, "num-server-rounds": 2, "seed": 3, **data, **_SETTINGS.get(method, {})}
    if method not in ("uls", "els"):
        config["fraction-train"] = 0.75
    alone, _ = run_in_process(tmp_path / "alone", 4, **config)
    batched, grid = run_in_process(tmp_path / "batched", 2, **config, **{"num-clients": 4})
    assert any(multiplex.MUX in m.content for m in grid.sent)  # it really ran in batches
    expected = (alone / "metrics.csv").read_text()
    assert len(expected.splitlines()) > 10
    assert (batched / "metrics.csv").read_text() == expected


def test_a_supernode_that_holds_an_institutions_data_serves_no_batch_and_the_run_fails_clearly(tmp_path):
    from bouquet.strategies import RunFailed

    config = {"method": "fedavg", "num-server-rounds": 1, **_IMAGES}
    from tests import inprocess

    original = inprocess.InProcessGrid.__init__

    def with_data_path(self, *args, **kwargs):
        original(self, *args, **kwargs)
        for ctx in self.contexts.values():
            ctx.node_config["data-path"] = str(tmp_path / "site")

    inprocess.InProcessGrid.__init__ = with_data_path
    try:
        with pytest.raises(RunFailed, match="never trained"):
            run_in_process(tmp_path / "out", 2, **config, **{"num-clients": 4})
    finally:
        inprocess.InProcessGrid.__init__ = original
    rejected = (next((tmp_path / "out").glob("*/summary.json"))).read_text()
    assert "simulation only" in rejected


def test_a_million_logical_clients_only_the_sampled_ones_are_ever_computed(tmp_path):
    config = {"method": "fedavg", "dataset": "fashion-mnist", "partitioner": "iid-draw", "examples-per-client": 20,
              "num-server-rounds": 2, "fraction-train": 8e-6, "fraction-evaluate": 0.0, "num-clients": 1_000_000}
    run_dir, grid = run_in_process(tmp_path, 2, **config)
    sampled = {cid for m in grid.sent if multiplex.MUX in m.content for cid in m.content[multiplex.MUX]["cids"]}
    assert len(sampled) == 16 and max(sampled) > 10_000  # 8 a round, drawn from the whole population
    assert len(list((run_dir / "client-state").iterdir())) == len(sampled)  # state only for those
    assert "global_model@global_test" in (run_dir / "metrics.csv").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    for rnd, seconds in summary["round_seconds"].items():  # where each round went: its parts, within it
        parts = summary["phase_seconds"][rnd]
        assert set(parts) == {"train", "aggregate", "evaluate", "server-evaluate", "checkpoint"}
        # summary.json rounds each value to 4 decimals: the parts may exceed the round by that rounding
        assert 0 < sum(parts.values()) <= seconds + 5e-5 * (len(parts) + 1) + 1e-9


def test_a_killed_batched_run_resumes_to_the_same_result_ignoring_state_written_after_its_checkpoint(
        tmp_path, monkeypatch):
    """Ditto keeps a personal model per client in the store; the killed run's round-3 snapshots
    (written after checkpoint 2, by another run id) must not be used by the resumed run."""
    import csv

    from bouquet import checkpoint
    from tests.simulation import kill_server_in_round

    config = {"method": "ditto", "num-server-rounds": 4, "seed": 5, "fraction-train": 0.75, **_SMALL,
              "num-clients": 4}
    full, _ = run_in_process(tmp_path / "full", 2, **config)
    undo = kill_server_in_round(monkeypatch, 3)
    with pytest.raises(SystemExit):
        run_in_process(tmp_path / "killed", 2, run_id=2**63 + 11, **config)
    undo()
    [run_dir] = (tmp_path / "killed").iterdir()
    assert checkpoint.load(run_dir).round == 2
    assert list(run_dir.glob("client-state/*/r00003.npz"))  # round 3 had trained someone: stale state exists
    run_in_process(tmp_path / "killed", 2, run_id=2**63 + 12, **config, **{"resume-from": str(run_dir)})

    def rows(folder):
        return sorted(tuple(r.values()) for r in csv.DictReader(open(folder / "metrics.csv")))

    assert rows(run_dir) == rows(full)


def test_logical_clients_in_a_real_ray_simulation(tmp_path):
    """Flower's own message path (serialisation, SuperLink, Ray actors): 5 clients on 2 SuperNodes."""
    import csv

    from tests.simulation import simulate

    summary = simulate(tmp_path, 2, method="fedavg", **{**_SMALL, "num-server-rounds": 2, "num-clients": 5,
                                                         "fraction-train": 0.6, "fraction-evaluate": 0.0})
    assert summary["status"] == "completed" and summary["clients"] == 5 and not summary["rejected_updates"]
    rows = list(csv.DictReader(open(f"{summary['run_dir']}/metrics.csv")))
    trained = {(r["round"], r["partition_id"]) for r in rows if r["metric"] == "num-examples" and r["partition_id"]}
    assert {rnd for rnd, _ in trained} == {"1", "2"} and len(trained) == 6  # 3 of 5 a round
    assert {int(pid) for _, pid in trained} <= set(range(5)) and len({pid for _, pid in trained}) > 2


def test_cli_logical_clients_default_to_one_supernode_per_core_and_need_a_count_on_a_ray_cluster(capsys, tmp_path):
    import socket

    from bouquet import cli
    from bouquet.preflight import slots

    out = f"output-dir='{tmp_path}'"
    assert cli.main(["run", "--num-clients", "1000", "--check", "--run-config",
                     f"method='fedavg' dataset='fashion-mnist' partitioner='iid-draw' {out}"]) == 0
    assert f"1000 logical clients on {slots()} SuperNodes" in capsys.readouterr().out  # one per core
    with socket.socket() as head:  # something answers at the address, as a Ray head would
        head.bind(("127.0.0.1", 0))
        head.listen()
        address = f"127.0.0.1:{head.getsockname()[1]}"
        assert cli.main(["run", "--ray-address", address, "--num-clients", "1000", "--check", "--run-config",
                         f"method='fedavg' dataset='fashion-mnist' partitioner='iid-draw' {out}"]) == 2
    assert "give --num-supernodes" in capsys.readouterr().err
