"""GeFL end to end in Flower's simulation, with mixed architectures where two sites name their
own (node config ``model-arch``): those are honoured, architectures never mix, an architecture
nobody runs keeps its weights, and the trained ones learn."""

import csv
from collections import defaultdict

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
