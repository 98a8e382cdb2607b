from pathlib import Path

import pytest

from bouquet.simulations.reproduce import PRESETS, markdown_table, mean_std, select_round


def test_select_round_takes_best_validation_latest_on_ties_and_skips_nan():
    rows = {1: {"v": 0.5}, 2: {"v": 0.8}, 3: {"v": float("nan")}, 4: {"v": 0.8}, 5: {"v": 0.7}}
    assert select_round(rows, "v") == 4
    assert select_round({1: {}, 2: {}}, "v") == 2  # nothing to select by: the last round


def test_mean_std_in_percent():
    assert mean_std([0.5, 0.7]) == "60.0 ± 14.1"
    assert mean_std([None, float("nan")]) == "–"


def test_markdown_table_rows_are_methods_and_columns_settings():
    preset = PRESETS["fedlog"]
    results = [{"method": m, "dataset": "cora", "clients": 3, "seed": s, **{metric: 0.5 + 0.1 * s for _, metric in preset.settings}}
               for m in ("fedlog", "fedavg") for s in (0, 1)]
    table = markdown_table(results, preset)
    lines = table.splitlines()
    assert lines[0] == "### cora, 3 clients (2 seeds)"
    assert lines[2] == "| method | Seen Graph | Unseen Node | Missing Class | New Client |"
    assert lines[4] == "| fedlog | 55.0 ± 7.1 | 55.0 ± 7.1 | 55.0 ± 7.1 | 55.0 ± 7.1 |"
    assert lines[5].startswith("| fedavg |") and len(lines) == 6


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_only_name_valid_methods_and_keys(name):
    from bouquet.config import RunConfig

    from bouquet.registry import METHODS

    from bouquet.config import data_spec
    from bouquet.datasets import check_spec

    preset = PRESETS[name]
    for dataset in preset.datasets:
        for method in preset.methods:
            cfg = RunConfig.from_run_config({**preset.run_config, **preset.config_of(dataset), "method": method,
                                             **preset.method_config.get(method, {})})
            assert cfg.method in METHODS and method.startswith(cfg.method)
            for k in preset.clients_of(dataset):  # dataset/partitioner/federation size fit together
                check_spec(data_spec(cfg, k))


def test_sweep_run_again_keeps_finished_runs_and_runs_only_the_rest(tmp_path, monkeypatch):
    import json
    from dataclasses import replace
    from types import SimpleNamespace

    from bouquet.simulations import launch as launch_mod
    from bouquet.simulations import reproduce as R

    preset = replace(PRESETS["fedkper"], datasets=("heart-disease",), methods=("fedavg", "fedkper"), seeds=2)
    calls = []

    def fake_launch(config, **_):
        calls.append((config["method"], config["seed"]))
        if config["method"] == "fedkper" and config["seed"] == 1 and len(calls) <= 4:
            return SimpleNamespace(ok=False, status="finished:failed", output="boom")  # interrupted
        run = Path(config["output-dir"]) / "run"
        run.mkdir(parents=True)
        (run / "metrics.csv").write_text("round,partition_id,metric,value\n"
                                         f"1,,global_model@global_test,{0.5 + config['seed'] / 10}\n")
        (run / "summary.json").write_text(json.dumps({"wall_seconds": 1.0}))
        return SimpleNamespace(ok=True, status="finished:completed", output="")

    monkeypatch.setattr(R, "launch", fake_launch)
    monkeypatch.setattr(launch_mod, "stop_superlink", lambda *a, **k: None)
    first = R.run_sweep(preset, tmp_path)
    assert len(calls) == 4 and [r["status"] for r in first].count("finished:failed") == 1
    second = R.run_sweep(preset, tmp_path)
    assert calls[4:] == [("fedkper", 1)]  # only the failed run again
    assert [r["status"] for r in second] == ["finished:completed"] * 4
    assert [r["global_model@global_test"] for r in second] == pytest.approx([0.5, 0.5, 0.6, 0.6])


def test_seeds_is_a_count_or_an_exact_list(tmp_path, monkeypatch):
    from dataclasses import replace

    from bouquet import cli
    from bouquet.simulations import reproduce as R

    assert cli._seeds("3") == 3 and cli._seeds("1,2") == (1, 2) and cli._seeds("2,") == (2,)
    with pytest.raises(ValueError):
        cli._seeds("1,x")
    assert replace(PRESETS["fedkper"], seeds=3).seed_values == (0, 1, 2)
    calls = []
    monkeypatch.setattr(R, "run_sweep", lambda preset, out: calls.append(preset.seed_values) or [])
    monkeypatch.setattr(R, "plot", lambda *a: None)
    R.reproduce("fedkper", seeds=(1, 2), datasets=("heart-disease",), out=tmp_path)
    assert calls == [(1, 2)]


def test_a_subset_run_into_a_sweep_folder_keeps_the_earlier_runs_in_results_and_table(tmp_path, monkeypatch):
    import csv
    import json
    from types import SimpleNamespace

    from bouquet.simulations import launch as launch_mod
    from bouquet.simulations import reproduce as R

    def fake_launch(config, **_):
        run = Path(config["output-dir"]) / "run"
        run.mkdir(parents=True)
        acc = {"fedavg": 0.5, "fedkper": 0.7}[config["method"]] + config["seed"] / 10
        (run / "metrics.csv").write_text(f"round,partition_id,metric,value\n1,,global_model@global_test,{acc}\n")
        (run / "summary.json").write_text(json.dumps({"wall_seconds": 1.0, "clients": 4, "seed": config["seed"]}))
        return SimpleNamespace(ok=True, status="finished:completed", output="")

    monkeypatch.setattr(R, "launch", fake_launch)
    monkeypatch.setattr(launch_mod, "stop_superlink", lambda *a, **k: None)
    monkeypatch.setattr(R, "plot", lambda *a: None)
    R.reproduce("fedkper", seeds=(0,), datasets=("heart-disease",), methods=("fedavg",), out=tmp_path)
    R.reproduce("fedkper", seeds=(1,), datasets=("heart-disease",), methods=("fedkper",), out=tmp_path)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert sorted((r["method"], r["seed"]) for r in rows) == [("fedavg", "0"), ("fedkper", "1")]
    table = (tmp_path / "table.md").read_text()
    assert "| fedavg | 50.0 ± 0.0 |" in table and "| fedkper | 80.0 ± 0.0 |" in table


def test_round_curves_average_each_round_over_seeds_and_plot(tmp_path):
    from bouquet.simulations.reproduce import plot_curves, round_curves

    def run(name, rows):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "metrics.csv").write_text(
            "round,partition_id,metric,value\n" + "".join(f"{r},{p},{m},{v}\n" for r, p, m, v in rows))
        return name

    g, nfr = "global_model@global_test", "nfr:global_model@global_test"
    results = [
        {"method": "fedavg", "dataset": "d", "clients": 4, "seed": 0,
         "run": run("a", [(0, "", g, 0.1), (1, "", g, 0.4), (1, "0", g, 0.9), (2, "", g, 0.6), (2, "", nfr, 0.2)])},
        {"method": "fedavg", "dataset": "d", "clients": 4, "seed": 1,
         "run": run("b", [(0, "", g, 0.3), (1, "", g, 0.6), (2, "", g, "nan")])},
        {"method": "fedkper", "dataset": "d", "clients": 4, "seed": 0},  # no run folder (an older table's row)
    ]
    curves = round_curves(results, tmp_path)
    assert set(curves) == {("d", "fedavg", 4)}
    assert curves[("d", "fedavg", 4)][g] == pytest.approx([0.2, 0.5, 0.6])  # client rows ignored; NaN skipped
    nfr_curve = curves[("d", "fedavg", 4)][nfr]
    assert nfr_curve[2] == pytest.approx(0.2) and all(v != v for v in nfr_curve[:2])
    plot_curves(results, PRESETS["fedkper"], tmp_path)
    assert (tmp_path / "d-rounds.png").stat().st_size > 0


def test_markdown_table_names_each_methods_seed_count_when_they_differ():
    preset = PRESETS["fedkper"]
    results = [{"method": m, "dataset": "cifar10-a0.1", "clients": 20, "seed": s, "global_model@global_test": 0.3}
               for m, seeds in (("fedkper", (0, 1, 2)), ("ditto", (0,))) for s in seeds]
    lines = markdown_table(results, preset).splitlines()
    assert lines[0] == "### cifar10-a0.1, 20 clients (3 seeds; per method in brackets)"
    assert lines[4].startswith("| fedkper (3 seeds) | 30.0 ± 0.0 |")
    assert lines[5].startswith("| ditto (1 seed) | 30.0 ± 0.0 |")
