"""Run results: headline metrics, one figure per kind of quantity, the partition figure."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from bouquet import metrics as M
from bouquet.datasets import GRAPH_DATASETS, DataSpec, client_data, load_dataset
from bouquet.datasets.files import data_root
from bouquet.results import (
    RunRecorder,
    headline_metrics,
    headline_text,
    kind_of,
    line_figure,
    plot_run,
    write_partition,
)

GRAPH_KEYS = ["local_model@local_test", "local_model@unseen_node", "local_model@missing_class", "local_model@new_client"]
FLIP_KEYS = {"nfr:global_model@global_test", "pfr:global_model@global_test", "nfr:local_model@local_test",
             "pfr:local_model@local_test", "bwt"}


def _row(r: int) -> dict[str, float]:
    """A server row as a real run has it: every setting of both models, stats, counts, loss."""
    acc = {M.name(model, data): 0.1 * r + 0.01 * i
           for i, (model, data) in enumerate((m, d) for m in ("global_model", "local_model")
                                             for d in ("local_test", "local_val", "unseen_node", "missing_class", "new_client"))}
    acc |= {M.GLOBAL_GLOBAL: 0.5, "balanced:local_model@local_test": 0.4, "balanced:global_model@local_test": 0.3}
    return acc | {k: 0.05 for k in FLIP_KEYS} | {"train_loss": 2.0 / r, "num-examples@local_test": 50.0}


SERVER = {r: _row(r) for r in (1, 2, 3)}


@pytest.mark.parametrize("method", ["fedlog", "fedavg", "fedpub", "local"])
def test_graph_headline_is_fedlogs_four_settings_for_every_method(method):
    for dataset in GRAPH_DATASETS:
        keys = [k for _, k in headline_metrics(method, dataset)]
        assert keys == [*GRAPH_KEYS, "train_loss"]


def test_array_headline_is_global_and_local_test_and_local_has_no_global():
    assert [k for _, k in headline_metrics("ditto", "digits")] == ["global_model@global_test", "local_model@local_test", "train_loss"]
    assert [k for _, k in headline_metrics("local", "cifar10")] == ["local_model@local_test", "train_loss"]


def test_round_line_is_short_and_only_headline():
    text = headline_text(SERVER[3], "fedlog", "cora")
    assert len(text) < 100 and "nfr" not in text and "global_model" not in text
    assert text.split() == [f"{label}={SERVER[3][key]:.3f}" for label, key in headline_metrics("fedlog", "cora")]
    # absent or NaN values are left out, not printed as nan
    assert headline_text({M.GLOBAL_GLOBAL: 0.5, "train_loss": math.nan}, "fedavg", "digits") == "global=0.500"


def test_kind_of_keeps_flip_rates_off_accuracy():
    assert kind_of("nfr:global_model@global_test") == kind_of("pfr:local_model@local_test") == kind_of("bwt") == "forgetting"
    assert kind_of("balanced:local_model@local_test") == kind_of("global_model@new_client") == "accuracy"
    assert kind_of("train_loss") == "loss"
    assert kind_of("num-examples@local_test") is None


def test_plot_run_writes_one_figure_per_kind(tmp_path):
    headline = [k for _, k in headline_metrics("fedlog", "cora")]
    written = plot_run(SERVER, tmp_path, title="t", headline=headline)
    assert set(written) == {"accuracy.png", "forgetting.png", "loss.png"}
    assert all((tmp_path / f).stat().st_size > 5_000 for f in written)
    acc = written["accuracy.png"]
    assert acc[:4] == GRAPH_KEYS  # headline first
    assert not any(k in FLIP_KEYS or k.startswith("num-examples") or k == "train_loss" for k in acc)
    assert len(acc) == 13
    assert set(written["forgetting.png"]) == FLIP_KEYS
    assert written["loss.png"] == ["train_loss"]


def test_figures_without_data_are_not_written(tmp_path):
    only_acc = {r: {M.GLOBAL_GLOBAL: 0.5, "bwt": math.nan} for r in (0, 1)}
    assert set(plot_run(only_acc, tmp_path)) == {"accuracy.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.png"]
    assert plot_run({}, tmp_path / "x") == {}


def test_headline_lines_are_thick_and_all_colours_distinct():
    series = {k: [(r, v) for r, row in SERVER.items() for kk, v in row.items() if kk == k]
              for k in SERVER[1] if kind_of(k) == "accuracy"}
    fig = line_figure(series, GRAPH_KEYS, "accuracy", (0.0, 1.0))
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    thick = {k for k, line in lines.items() if line.get_linewidth() > 2}
    assert thick == set(GRAPH_KEYS)
    assert all(line.get_alpha() < 1 for k, line in lines.items() if k not in thick)  # the rest faded
    assert len({line.get_color() for line in lines.values()}) == len(lines) == 13
    assert fig.axes[0].get_ylim() == (0.0, 1.0)
    legend = fig.axes[0].get_legend()
    fig.canvas.draw()
    box, axes = legend.get_window_extent(), fig.axes[0].get_window_extent()
    assert box.x0 >= axes.x1  # legend right of the axes, not over the data


def test_recorder_finish_plots_by_the_run_method(tmp_path):
    rec = RunRecorder(tmp_path / "run", {"method": "local", "dataset": "digits"})
    for r in (1, 2):
        rec.server_metrics(r, {"local_model@local_test": 0.5 + 0.1 * r, "nfr:local_model@local_test": 0.1, "train_loss": 1.0})
    rec.finish()
    assert {p.name for p in (tmp_path / "run").glob("*.png")} == {"accuracy.png", "forgetting.png", "loss.png"}
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert {r["metric"] for r in rows} == {"local_model@local_test", "nfr:local_model@local_test", "train_loss"}


def _read_partition_csv(path) -> dict[tuple[str, int], int]:
    return {(r["client"], int(r["class"])): int(r["count"]) for r in csv.DictReader(path.open())}


def test_partition_counts_are_the_clients_own_labels(tmp_path):
    spec = DataSpec("digits", "iid", 3, alpha=0.5, classes_per_client=2, seed=0)
    counts = write_partition(spec, tmp_path)
    assert (tmp_path / "partition.png").stat().st_size > 5_000
    assert [c for c, _ in counts] == ["0", "1", "2"]
    pool = load_dataset("digits", data_root()).y_train
    assert sum(int(row.sum()) for _, row in counts) == len(pool)  # iid: every sample in some client
    indices = []
    for (name, row), pid in zip(counts, range(3), strict=True):
        c = client_data(spec, pid)
        indices.append(np.concatenate([c.train_indices, c.test_indices]))
        assert np.array_equal(row, np.bincount(np.concatenate([c.y_train, c.y_test]), minlength=c.num_classes))
    every = np.concatenate(indices)
    assert len(np.unique(every)) == len(every) == len(pool)  # each sample in exactly one client
    table = _read_partition_csv(tmp_path / "partition.csv")
    assert table == {(name, k): int(n) for name, row in counts for k, n in enumerate(row)}


def test_louvain_partition_includes_the_held_out_subgraph(tmp_path):
    spec = DataSpec("cora", "louvain", 3, alpha=0.5, classes_per_client=2, seed=0)
    counts = write_partition(spec, tmp_path)
    assert [c for c, _ in counts] == ["0", "1", "2", "held-out"]
    assert sum(int(row.sum()) for _, row in counts) == load_dataset("cora", data_root()).num_nodes
    assert int(counts[1][1].sum()) == client_data(spec, 1).num_nodes


def test_a_figure_that_cannot_be_drawn_costs_the_figure_not_the_run(tmp_path, monkeypatch):
    import bouquet.results as results

    rec = RunRecorder(tmp_path / "run", {"method": "fedavg", "dataset": "digits"})
    rec.server_metrics(1, {"global_model@global_test": 0.5, "train_loss": float("nan"), "dp-epsilon-spent": float("inf")})

    def broken(*_, **__):
        raise ValueError("mathtext")

    monkeypatch.setattr(results, "plot_run", broken)
    summary = rec.finish()
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"summary.json holds {c}, not JSON"))
    assert on_disk["status"] == summary["status"] == "completed" and "mathtext" in on_disk["plot_error"]
    assert on_disk["final"] == {"global_model@global_test": 0.5}  # NaN and inf are "not defined", as in the CSV


def test_phase_seconds_add_up_per_round_and_survive_an_exception(tmp_path, monkeypatch):
    clock = iter([0.0, 0.5, 1.0, 3.0, 3.5, 4.5, 10.0, 10.25])  # t0, round start, then each phase's start and end
    monkeypatch.setattr("bouquet.results.time.monotonic", lambda: next(clock))
    rec = RunRecorder(tmp_path / "run", {"method": "fedavg", "dataset": "digits"})
    rec.round_started(1)
    with rec.phase(1, "train"):  # 1.0 -> 3.0
        pass
    with pytest.raises(RuntimeError), rec.phase(1, "aggregate"):  # 3.5 -> 4.5, recorded though it failed
        raise RuntimeError("bad reply")
    with rec.phase(1, "train"):  # a second train part adds up: 10.0 -> 10.25
        pass
    assert rec.phase_seconds == {1: {"train": 2.25, "aggregate": 1.0}}
    monkeypatch.setattr("bouquet.results.time.monotonic", lambda: 11.0)
    summary = rec.finish()
    assert summary["phase_seconds"] == {"1": {"train": 2.25, "aggregate": 1.0}}
    from bouquet import provenance  # an in-process run: the package's own checkout says which code ran
    assert summary["code"] == provenance.of_checkout(provenance.Path(provenance.__file__).parents[1])
