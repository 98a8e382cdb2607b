"""GeFL end to end in Flower's simulation, with mixed architectures where two sites name their
own (node config ``model-arch``): those are honoured, architectures never mix, an architecture
nobody runs keeps its weights, and the trained ones learn. And ``gefl-share-first-block``: the
released code's first block averaged over all clients in target rounds, its validation, and
that finished reproduce runs made before the key existed stay valid."""

import csv
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict

from bouquet import metrics as M
from bouquet.config import ConfigError, RunConfig
from bouquet.records import to_record
from bouquet.strategies.gefl import MODEL_ARCH, GeFLStrategy
from tests.simulation import simulate


def test_gefl_with_node_config_architectures(tmp_path):
    summary = simulate(
        tmp_path, 3, node_config=lambda pid: {"model-arch": 7} if pid < 2 else {},
        **{"method": "gefl", "dataset": "fashion-mnist", "partitioner": "iid", "data-fraction": 0.05,
           "num-server-rounds": 4, "gefl-gen-rounds": 2, "gefl-gen-epochs": 1, "learning-rate": 0.1,
           "local-epochs": 2, "fraction-evaluate": 0.0})
    assert summary["status"] == "completed"
    archs, server = {}, defaultdict(dict)
    with open(f"{summary['run_dir']}/metrics.csv") as f:
        for row in csv.DictReader(f):
            if row["metric"] == "model-arch":
                archs.setdefault(int(row["partition_id"]), set()).add(float(row["value"]))
            elif row["partition_id"] == "":
                server[int(row["round"])][row["metric"]] = float(row["value"])
    assert archs == {0: {7.0}, 1: {7.0}, 2: {2.0}}  # node config for 0 and 1, the paper's rule for 2
    final = server[4]
    assert final["arch0@global_test"] == server[0]["arch0@global_test"]  # nobody runs arch 0: kept
    assert "arch7@global_test" not in server[2]  # generator rounds: nothing to score (nets untouched)
    assert final["best-checkpoint:global_model@global_test"] >= final["global_model@global_test"]
    assert 0.0 <= final["global_model@generated"] <= 1.0  # the label-fidelity diagnostic is reported
    assert final["arch7@global_test"] > 0.4 and final["arch2@global_test"] > 0.4  # chance: 0.1
    assert server[3]["gefl-phase"] == 2 and server[1]["gefl-phase"] == 1


FE_W, FE_N, FC = "fe.net.0.weight", "fe.net.1.num_batches_tracked", "fc.weight"
GLOBAL = {**{f"arch{m}.{FE_W}": np.full(2, 10.0 * m, np.float32) for m in range(3)},
          **{f"arch{m}.{FE_N}": np.array(5, np.int64) for m in range(3)},
          **{f"arch{m}.{FC}": np.full(1, -1.0, np.float32) for m in range(3)}, "gen.z": np.zeros(1, np.float32)}


def _aggregate(share: bool, server_round: int) -> dict[str, np.ndarray]:
    """One aggregation of three replies: two clients of architecture 0 (1 and 3 examples), one of
    architecture 1 (2 examples); nobody runs architecture 2. Round 1 is a generator round, 2 a target round."""
    def reply(arch, n, fe, count, fc):
        arrays = {k: v + 100 for k, v in GLOBAL.items()}  # other architectures' keys: junk, never read
        arrays.update({f"arch{arch}.{FE_W}": np.asarray(fe, np.float32),
                       f"arch{arch}.{FE_N}": np.array(count, np.int64), f"arch{arch}.{FC}": np.asarray([fc], np.float32)})
        metrics = MetricRecord({MODEL_ARCH: arch, M.NUM_EXAMPLES: n, M.PARTITION_ID: arch})
        return SimpleNamespace(content=RecordDict({"arrays": to_record(arrays), "metrics": metrics}))

    strategy = GeFLStrategy.__new__(GeFLStrategy)
    strategy.cfg = RunConfig.from_run_config({"method": "gefl", "dataset": "mnist", "partitioner": "iid",
                                              "gefl-gen-rounds": 1, "num-server-rounds": 3,
                                              "gefl-share-first-block": share})
    strategy.global_arrays = to_record(GLOBAL)
    record, _ = strategy.aggregate_train(server_round, [reply(0, 1, [1, 2], 2, 1.0), reply(0, 3, [3, 6], 3, 2.0),
                                                        reply(1, 2, [9, 0], 13, 3.0)])
    return {k: v.numpy() for k, v in record.items()}


def test_shared_first_block_is_the_all_client_mean_in_every_architecture():
    new = _aggregate(share=True, server_round=2)
    for m in range(3):  # architecture 2 had no client this round and gets the shared block too (as LGFedAvg)
        np.testing.assert_allclose(new[f"arch{m}.{FE_W}"], [(1 + 3 * 3 + 2 * 9) / 6, (2 + 3 * 6 + 0) / 6], rtol=1e-6)
        assert new[f"arch{m}.{FE_N}"] == 6  # BN buffers too: rint((2 + 3 * 3 + 2 * 13) / 6)
    np.testing.assert_allclose(new[f"arch0.{FC}"], [(1 + 3 * 2) / 4])  # the rest stays per architecture
    np.testing.assert_allclose(new[f"arch1.{FC}"], [3.0])
    np.testing.assert_array_equal(new[f"arch2.{FC}"], GLOBAL[f"arch2.{FC}"])


def test_without_the_switch_first_blocks_are_not_mixed():
    new = _aggregate(share=False, server_round=2)
    np.testing.assert_allclose(new[f"arch0.{FE_W}"], [(1 + 3 * 3) / 4, (2 + 3 * 6) / 4])
    np.testing.assert_allclose(new[f"arch1.{FE_W}"], [9.0, 0.0])
    np.testing.assert_array_equal(new[f"arch2.{FE_W}"], GLOBAL[f"arch2.{FE_W}"])
    assert new[f"arch0.{FE_N}"] == 3 and new[f"arch1.{FE_N}"] == 13  # rint((2 + 3 * 3) / 4)


def test_the_switch_leaves_generator_rounds_alone():
    new = _aggregate(share=True, server_round=1)
    assert all(np.array_equal(new[k], GLOBAL[k]) for k in GLOBAL if not k.startswith("gen."))


@pytest.mark.parametrize("method", ["gefl-f", "lg-fedavg", "hetero-fedavg", "fedavg"])
def test_share_first_block_is_refused_for_other_methods(method):
    config = {"method": method, "dataset": "mnist", "num-server-rounds": 200}
    with pytest.raises(ConfigError, match="gefl-share-first-block=true with method="):
        RunConfig.from_run_config({**config, "gefl-share-first-block": True})
    assert not RunConfig.from_run_config(config).gefl_share_first_block


def test_finished_reproduce_runs_without_the_key_still_match():
    """reproduce keeps a finished run when the keys the sweep sets agree with its stored config; a run stored
    before the key existed has no such key, and only the -sharefe variants set it."""
    from bouquet.simulations.reproduce import PRESETS, config_mismatch, run_config_of

    preset = PRESETS["gefl"]
    for method in preset.methods:
        intended = run_config_of(preset, "fmnist-10", method, 0)
        stored = RunConfig.from_run_config(intended).to_run_config()
        stored.pop("gefl-share-first-block")
        assert config_mismatch(intended, stored) == {}
    for g in ("cvae", "dcgan"):
        assert f"gefl-{g}-sharefe" not in preset.methods  # run with --methods
        intended = run_config_of(preset, "fmnist-10", f"gefl-{g}-sharefe", 0)
        assert RunConfig.from_run_config(intended).gefl_share_first_block
        stored = RunConfig.from_run_config(run_config_of(preset, "fmnist-10", f"gefl-{g}", 0)).to_run_config()
        assert config_mismatch(intended, stored) == {"gefl-share-first-block": (False, True)}
