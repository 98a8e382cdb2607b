from pathlib import Path

import pytest

from bouquet.simulations.reproduce import PRESETS, markdown_table, mean_std, select_round



def _recorded(config):
    """The run config a real run records in summary.json (normalised, defaults included)."""
    from bouquet.config import RunConfig

    return RunConfig.from_run_config({k: v for k, v in config.items() if k != "num-clients"}).to_run_config()


class _NoSuperLink:
    """Stands in for the sweep's private SuperLink when ``launch`` is faked."""

    def __init__(self, **_):
        pass

    def start(self):
        pass

    def stop(self):
        pass

class _NoRayNode:
    """Stands in for the sweep's private Ray head when ``launch`` is faked."""

    address = "127.0.0.1:1"
    temp_dir = Path("/nonexistent/bqray-test")

    def __init__(self, **_):
        pass

    def alive(self):
        return True

    def start(self):
        return self.address

    def stop(self, keep_logs=False):
        pass


def test_select_round_takes_best_validation_latest_on_ties_and_skips_nan():
    rows = {1: {"v": 0.5}, 2: {"v": 0.8}, 3: {"v": float("nan")}, 4: {"v": 0.8}, 5: {"v": 0.7}}
    assert select_round(rows, "v") == 4
    assert select_round({1: {}, 2: {}}, "v") == 2  # nothing to select by: the last round


def test_macro_missing_class_counts_each_client_once_and_skips_clients_without_missing_nodes():
    from bouquet.simulations.reproduce import MACRO_MISSING, MISSING, add_macro_missing

    n = "num-examples@missing_class"
    server = {1: {MISSING: 0.82}, 2: {}}
    clients = {1: {0: {MISSING: 0.9, n: 90.0}, 1: {MISSING: 0.1, n: 10.0}, 2: {MISSING: 0.0, n: 0.0}},
               2: {0: {MISSING: float("nan"), n: 5.0}}, 3: {0: {MISSING: 1.0, n: 1.0}}}
    add_macro_missing(server, clients)
    assert server[1][MACRO_MISSING] == pytest.approx(0.5)  # (0.9 + 0.1) / 2; micro would be 0.82
    assert MACRO_MISSING not in server[2] and 3 not in server


def test_mean_std_in_percent():
    assert mean_std([0.5, 0.7]) == "60.0 ± 14.1"
    assert mean_std([None, float("nan")]) == "–"
    assert mean_std([0.5, None]) == "50.0"  # one value: no spread, so no "± 0.0"


def test_markdown_table_rows_are_methods_and_columns_settings():
    preset = PRESETS["fedlog"]
    results = [{"method": m, "dataset": "cora", "clients": 3, "seed": s, "status": "finished:completed",
                **{metric: 0.5 + 0.1 * s for _, metric in preset.settings}}
               for m in ("fedlog", "fedavg") for s in (0, 1)]
    table = markdown_table(results, preset)
    lines = table.splitlines()
    assert lines[0] == "### cora, 3 clients (2 seeds)"
    assert lines[2] == "| method | Seen Graph | Unseen Node | Missing Class | New Client | Missing Class, macro |"
    assert lines[4] == "| fedlog | 55.0 ± 7.1 | 55.0 ± 7.1 | 55.0 ± 7.1 | 55.0 ± 7.1 | 55.0 ± 7.1 |"
    assert lines[5].startswith("| fedavg |") and len(lines) == 6


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_only_name_valid_methods_and_keys(name):
    from bouquet.config import RunConfig

    from bouquet.registry import METHODS

    from bouquet.config import data_spec
    from bouquet.datasets import check_spec

    preset = PRESETS[name]
    for dataset in dict.fromkeys([*preset.datasets, *preset.dataset_config]):  # named scenarios too
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

    from bouquet.simulations import reproduce as R

    preset = replace(PRESETS["fedkper"], datasets=("heart-disease",), methods=("fedavg", "fedkper"), seeds=2)
    calls = []

    def fake_launch(config, **_):
        calls.append((config["method"], config["seed"]))
        if config["method"] == "fedkper" and config["seed"] == 1 and len(calls) <= 4:
            return SimpleNamespace(ok=False, status="finished:failed", output="boom", reason="boom")  # interrupted
        run = Path(config["output-dir"]) / "run"
        run.mkdir(parents=True)
        (run / "metrics.csv").write_text("round,partition_id,metric,value\n"
                                         f"1,,global_model@global_test,{0.5 + config['seed'] / 10}\n")
        (run / "summary.json").write_text(json.dumps({"wall_seconds": 1.0, "run_config": _recorded(config)}))
        return SimpleNamespace(ok=True, status="finished:completed", output="")

    monkeypatch.setattr(R, "launch", fake_launch)
    monkeypatch.setattr(R, "SuperLink", _NoSuperLink)
    monkeypatch.setattr(R, "RayNode", _NoRayNode)
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
    monkeypatch.setattr(R, "run_sweep", lambda preset, out, **_: calls.append(preset.seed_values) or [])
    monkeypatch.setattr(R, "plot", lambda *a: None)
    R.reproduce("fedkper", seeds=(1, 2), datasets=("heart-disease",), out=tmp_path)
    assert calls == [(1, 2)]


def test_a_subset_run_into_a_sweep_folder_keeps_the_earlier_runs_in_results_and_table(tmp_path, monkeypatch):
    import csv
    import json
    from types import SimpleNamespace

    from bouquet.simulations import reproduce as R

    def fake_launch(config, **_):
        run = Path(config["output-dir"]) / "run"
        run.mkdir(parents=True)
        acc = {"fedavg": 0.5, "fedkper": 0.7}[config["method"]] + config["seed"] / 10
        (run / "metrics.csv").write_text(f"round,partition_id,metric,value\n1,,global_model@global_test,{acc}\n")
        (run / "summary.json").write_text(json.dumps({"wall_seconds": 1.0, "clients": 4, "seed": config["seed"],
                                                       "run_config": _recorded(config)}))
        return SimpleNamespace(ok=True, status="finished:completed", output="")

    monkeypatch.setattr(R, "launch", fake_launch)
    monkeypatch.setattr(R, "SuperLink", _NoSuperLink)
    monkeypatch.setattr(R, "RayNode", _NoRayNode)
    monkeypatch.setattr(R, "plot", lambda *a: None)
    R.reproduce("fedkper", seeds=(0,), datasets=("heart-disease",), methods=("fedavg",), out=tmp_path)
    R.reproduce("fedkper", seeds=(1,), datasets=("heart-disease",), methods=("fedkper",), out=tmp_path)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert sorted((r["method"], r["seed"]) for r in rows) == [("fedavg", "0"), ("fedkper", "1")]
    table = (tmp_path / "table.md").read_text()
    assert "| fedavg | 50.0 |" in table and "| fedkper | 80.0 |" in table  # one seed each: no "±"
    # each row holds one seed (seed 0 for fedavg, seed 1 for fedkper): the block says so
    assert "### heart-disease, 4 clients (1 seed, no spread)" in table


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
    results = [{"method": m, "dataset": "cifar10-a0.1", "clients": 20, "seed": s, "status": "finished:completed",
                "global_model@global_test": 0.3}
               for m, seeds in (("fedkper", (0, 1, 2)), ("ditto", (0,))) for s in seeds]
    lines = markdown_table(results, preset).splitlines()
    assert lines[0] == "### cifar10-a0.1, 20 clients (3 seeds; per method in brackets)"
    assert lines[4].startswith("| fedkper (3 seeds) | 30.0 ± 0.0 |")
    assert lines[5].startswith("| ditto (1 seed, no spread) | 30.0 |")


def _rows(preset, seeds, methods=("fedlog", "fedavg"), dataset="cora", k=3):
    """Result rows with every column (headline, ``code:`` and ``last:``) set apart by value."""
    return [{"method": m, "dataset": dataset, "clients": k, "seed": s, "status": "finished:completed",
             **{metric: 0.5 + 0.1 * s for _, metric in preset.settings},
             **{"code:" + metric: 0.4 for _, metric in preset.settings},
             **{"last:" + metric: 0.3 for _, metric in preset.settings}} for m in methods for s in seeds]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_report_puts_the_labelled_headline_first_with_its_reason_and_seed_counts(name):
    from bouquet.simulations.reproduce import report

    preset = PRESETS[name]
    dataset, k = preset.datasets[0], preset.clients_of(preset.datasets[0])[0]
    headline, text = report(_rows(preset, (0, 1, 2), preset.methods[:2], dataset, k), preset, name)
    sections = [ln for ln in text.splitlines() if ln.startswith("## ")]
    assert text.startswith(f"# bouquet reproduce {name}\n")
    assert sections[0].startswith("## Headline table") and headline in text
    assert text.index(headline) < text.index(sections[1]) if len(sections) > 1 else True
    assert preset.headline.startswith("This is the headline table") and preset.headline in headline
    blocks = [ln for ln in text.splitlines() if ln.startswith("### ")]
    assert blocks and all(ln.endswith(f"{dataset}, {k} clients (3 seeds)") or ln == f"### {dataset}, {k} clients (3 seeds)"
                          for ln in blocks)
    assert len(blocks) == len(sections)  # every table states its seed count
    if preset.select_by is None:
        assert len(sections) == 1
    else:  # the two other tables, each labelled as not the headline, with their own values
        assert [s.split(":")[0] for s in sections] == ["## Headline table (table 1 of 3)", "## Table 2 of 3",
                                                       "## Table 3 of 3"]
        assert "FedLoG code's validation weighting" in sections[1] and "final round" in sections[2]
        assert text.count("Not the headline") == 2
        assert "| 60.0 ± 10.0 |" in headline and "| 40.0 ± 0.0 |" in text and "| 30.0 ± 0.0 |" in text


def test_report_with_one_seed_has_no_spread_anywhere():
    from bouquet.simulations.reproduce import report

    preset = PRESETS["fedlog"]
    headline, text = report(_rows(preset, (0,)), preset, "fedlog")
    assert not [ln for ln in text.splitlines() if ln.startswith("|") and "±" in ln]
    assert text.count("### cora, 3 clients (1 seed, no spread)") == 3
    assert "| fedlog | 50.0 | 50.0 | 50.0 | 50.0 |" in headline


def test_reproduce_prints_and_writes_the_headline_first(tmp_path, monkeypatch, capsys):
    from bouquet.simulations import reproduce as R

    rows = [{**r, "run": ""} for r in _rows(PRESETS["fedlog"], (0,), ("fedlog",))]
    monkeypatch.setattr(R, "run_sweep", lambda preset, out, **_: rows)
    monkeypatch.setattr(R, "plot", lambda *a: None)
    monkeypatch.setattr(R, "plot_curves", lambda *a: None)
    R.reproduce("fedlog", quick=True, out=tmp_path)
    printed, table = capsys.readouterr().out, (tmp_path / "table.md").read_text()
    headline, _ = R.report(rows, R.build_preset("fedlog", quick=True), "fedlog")
    assert printed.startswith(headline) and table.startswith("# bouquet reproduce fedlog\n\n" + headline)
    assert "Table 2 of 3" not in printed and "Table 2 of 3" in table


@pytest.mark.parametrize(("name", "quick"), [(n, q) for n in sorted(PRESETS) for q in (False, True)])
def test_exported_toml_is_the_run_config_the_sweep_builds(tmp_path, name, quick):
    import tomllib

    from flwr.common.config import parse_config_args

    from bouquet.config import RunConfig
    from bouquet.simulations.reproduce import build_preset, export_run_configs, run_config_of

    preset = build_preset(name, quick=quick)
    written = export_run_configs(name, tmp_path, quick=quick)
    cells = [(d, k, m) for d in preset.datasets for k in preset.clients_of(d) for m in preset.methods]
    assert sorted(p.name for p in written) == sorted(f"{m}_{d}_k{k}.toml" for d, k, m in cells)
    for dataset, k, method in cells:
        path = tmp_path / f"{method}_{dataset}_k{k}.toml"
        text = path.read_text()
        parsed = parse_config_args([str(path)])  # what `flwr run . --run-config <file>` reads
        assert parsed == tomllib.loads(text)
        sweep = run_config_of(preset, dataset, method, preset.seed_values[0])
        assert parsed == sweep  # same keys, same values (TOML types included)
        assert RunConfig.from_run_config(parsed) == RunConfig.from_run_config(sweep)
        assert f"#   num-supernodes={k} client-resources-num-cpus=1 client-resources-num-gpus=0.0\n" in text
        assert f'--run-config "{tmp_path}/{path.name}"' in text and '#   flwr run "$BOUQUET" --stream' in text
        assert f"--methods {method} --seeds {preset.seed_values[0]}," in text


def test_committed_preset_tomls_match_the_generator(tmp_path):
    """docs/presets/<preset>[-quick]/ is export_run_configs' output (rerun it after changing a preset)."""
    import tomllib

    from bouquet.simulations.reproduce import export_run_configs

    docs = Path(__file__).resolve().parents[2] / "docs" / "presets"
    for name in sorted(PRESETS):
        for quick in (False, True):
            folder = docs / f"{name}{'-quick' if quick else ''}"
            fresh = {p.name: p for p in export_run_configs(name, tmp_path / folder.name, quick=quick)}
            assert sorted(p.name for p in folder.glob("*.toml")) == sorted(fresh)
            for file in folder.glob("*.toml"):
                assert tomllib.loads(file.read_text()) == tomllib.loads(fresh[file.name].read_text())
                assert f'--run-config "$BOUQUET/docs/presets/{folder.name}/{file.name}"' in file.read_text()


def test_cli_export_toml_writes_the_cells_and_rejects_a_bad_method(tmp_path, capsys):
    from bouquet import cli

    assert cli.main(["reproduce", "fedkper", "--quick", "--methods", "fedkper,ditto", "--export-toml",
                     str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.toml")) == ["ditto_heart-disease_k4.toml",
                                                               "fedkper_heart-disease_k4.toml"]
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "fedkper", "--methods", "nope", "--export-toml", str(tmp_path / "x")])
    assert "method='nope' is not valid" in capsys.readouterr().err


def test_a_cell_with_more_clients_than_cores_runs_them_as_logical_clients(monkeypatch):
    from bouquet import preflight
    from bouquet.simulations import reproduce as R

    monkeypatch.setattr(preflight, "usable_cpus", lambda: 2)
    assert R.federation(2, per_client=False) == (2, {})  # fits the slots: a SuperNode each
    assert R.federation(100, per_client=False) == (2, {"num-clients": 100})
    assert R.federation(100, per_client=True) == (100, {})


def test_a_kept_run_made_with_another_config_is_run_again(tmp_path, monkeypatch):
    """A sweep continued after its preset changed (e.g. a protocol key) never mixes the older
    run into the table: the kept run's recorded config is compared, key by key."""
    import json
    from dataclasses import replace
    from types import SimpleNamespace

    from bouquet.config import RunConfig
    from bouquet.simulations import reproduce as R

    preset = replace(PRESETS["fedkper"], datasets=("heart-disease",), methods=("fedavg",), seeds=1)
    calls = []

    def fake_launch(config, **_):
        calls.append(config)
        run = Path(config["output-dir"]) / f"run{len(calls)}"
        run.mkdir(parents=True)
        (run / "metrics.csv").write_text("round,partition_id,metric,value\n1,,global_model@global_test,0.5\n")
        recorded = RunConfig.from_run_config({k: v for k, v in config.items() if k != "num-clients"}).to_run_config()
        (run / "summary.json").write_text(json.dumps({"wall_seconds": 1.0, "run_config": recorded}))
        return SimpleNamespace(ok=True, status="finished:completed", output="")

    monkeypatch.setattr(R, "launch", fake_launch)
    monkeypatch.setattr(R, "SuperLink", _NoSuperLink)
    monkeypatch.setattr(R, "RayNode", _NoRayNode)
    R.run_sweep(preset, tmp_path)
    R.run_sweep(preset, tmp_path)
    assert len(calls) == 1  # same config: kept
    changed = replace(preset, run_config={**preset.run_config, "learning-rate": 0.02})
    R.run_sweep(changed, tmp_path)
    assert len(calls) == 2 and calls[-1]["learning-rate"] == 0.02
    assert R.config_mismatch({"method": "fedavg", "learning-rate": 0.02},
                             {"method": "fedavg", "learning-rate": 0.01, "output-dir": "x"}) == {"learning-rate": (0.01, 0.02)}
    assert R.config_mismatch({"method": "fedavg", "learning-rate": 1}, {"method": "fedavg", "learning-rate": 1.0}) == {}


def test_an_interrupted_subset_sweep_leaves_the_folders_earlier_runs_in_results_csv(tmp_path, monkeypatch):
    import csv

    from bouquet.simulations import reproduce as R

    def fake_launch(config, **_):
        if config["seed"] == 2:
            raise KeyboardInterrupt  # Ctrl-C / SIGTERM in the middle of the continued sweep
        return _completed_run(config)

    monkeypatch.setattr(R, "launch", fake_launch)
    monkeypatch.setattr(R, "SuperLink", _NoSuperLink)
    monkeypatch.setattr(R, "RayNode", _NoRayNode)
    monkeypatch.setattr(R, "plot", lambda *a: None)
    R.reproduce("fedkper", seeds=(0,), datasets=("heart-disease",), methods=("fedavg", "fedkper"), out=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        R.reproduce("fedkper", seeds=(1, 2), datasets=("heart-disease",), methods=("fedavg",), out=tmp_path)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert sorted((r["method"], r["seed"]) for r in rows) == [("fedavg", "0"), ("fedavg", "1"), ("fedkper", "0")]


def test_a_run_that_ended_failed_is_never_kept_nor_tabulated_and_runs_again(tmp_path, monkeypatch):
    """The ServerApp writes summary.json also for a failed run (status 'failed', e.g. every reply
    rejected): a later sweep must not take it for a finished one."""
    import csv
    import json
    from dataclasses import replace
    from types import SimpleNamespace

    from bouquet.simulations import reproduce as R

    preset = replace(PRESETS["fedkper"], datasets=("heart-disease",), methods=("fedavg",), seeds=1)
    calls = []

    def fake_launch(config, **_):
        calls.append(config["seed"])
        failed = len(calls) == 1
        run = Path(config["output-dir"]) / f"run{len(calls)}"
        run.mkdir(parents=True)
        (run / "metrics.csv").write_text("round,partition_id,metric,value\n1,,global_model@global_test,0.5\n")
        (run / "summary.json").write_text(json.dumps({"wall_seconds": 1.0, "status": "failed" if failed else "completed",
                                                       "failure": "every reply rejected", "run_config": _recorded(config)}))
        return SimpleNamespace(ok=not failed, status="finished:failed" if failed else "finished:completed", output="",
                               reason="no round had min-replies=1 sound update(s)")

    monkeypatch.setattr(R, "launch", fake_launch)
    monkeypatch.setattr(R, "SuperLink", _NoSuperLink)
    monkeypatch.setattr(R, "RayNode", _NoRayNode)
    monkeypatch.setattr(R, "plot", lambda *a: None)
    R.reproduce("fedkper", seeds=(0,), datasets=("heart-disease",), methods=("fedavg",), out=tmp_path)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["status"] for r in rows] == ["finished:failed"]  # not also a "completed" row from its summary
    assert [(r["status"], r["reason"]) for r in R.scan(preset, tmp_path)] == [("finished:failed", "every reply rejected")]
    R.reproduce("fedkper", seeds=(0,), datasets=("heart-disease",), methods=("fedavg",), out=tmp_path)
    assert len(calls) == 2  # run again, not kept
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(r["status"], r["run"]) for r in rows] == [("finished:completed", "runs/fedavg_heart-disease_k4_s0/run2")]


def _completed_run(config):
    """What a faked ``launch`` leaves: one completed run folder under the cell's output-dir."""
    import json
    from types import SimpleNamespace

    run = Path(config["output-dir"]) / "run"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("round,partition_id,metric,value\n1,,global_model@global_test,0.5\n")
    (run / "summary.json").write_text(json.dumps({"wall_seconds": 1.0, "run_config": _recorded(config)}))
    return SimpleNamespace(ok=True, status="finished:completed", output="")


def _fake_sweep(monkeypatch, head_fails: bool = False, launch=None, link_stop_raises: bool = False):
    """run_sweep with launch faked; records every SuperLink's Ray address and life, and every
    head's life (``kill`` ends a head's life as a crash would)."""
    from bouquet.simulations import reproduce as R

    seen = {"links": [], "heads": [], "link_events": []}

    class Link(_NoSuperLink):
        def __init__(self, ray_address=None, **_):
            seen["links"].append(ray_address)

        def start(self):
            seen["link_events"].append("start")

        def stop(self):
            seen["link_events"].append("stop")
            if link_stop_raises:
                raise KeyboardInterrupt  # a second Ctrl-C while the SuperLink stops

    class Head(_NoRayNode):
        def __init__(self, **kw):
            self.events, self.num_cpus, self.dead = [], kw["num_cpus"], False
            seen["heads"].append(self)

        def alive(self):
            return not self.dead

        def start(self):
            self.events.append("start")
            if head_fails:
                raise RuntimeError("ray start did not come up")
            return self.address

        def stop(self, keep_logs=False):
            self.events.append("stop, logs kept" if keep_logs else "stop")

    monkeypatch.setattr(R, "launch", launch or (lambda config, **_: _completed_run(config)))
    monkeypatch.setattr(R, "SuperLink", Link)
    monkeypatch.setattr(R, "RayNode", Head)
    return R, seen


def _heart(methods=("fedavg",), seeds=1):
    from dataclasses import replace

    return replace(PRESETS["fedkper"], datasets=("heart-disease",), methods=methods, seeds=seeds)


@pytest.mark.parametrize(("kw", "link_address", "heads"), [
    ({}, "127.0.0.1:1", 1),  # default: one head for the sweep, its address to the one SuperLink
    ({"warm_ray": False}, None, 0),  # --no-warm-ray: each run starts its own Ray
    ({"ray_address": "10.0.0.5:6379"}, "10.0.0.5:6379", 0),  # the user's cluster: no head of ours
])
def test_a_sweep_runs_on_one_ray_head_it_starts_and_stops(tmp_path, monkeypatch, kw, link_address, heads):
    from bouquet import preflight

    monkeypatch.setattr(preflight, "usable_cpus", lambda: 3)
    R, seen = _fake_sweep(monkeypatch)
    rows = R.run_sweep(_heart(("fedavg", "fedkper"), 2), tmp_path, **kw)
    assert [r["status"] for r in rows] == ["finished:completed"] * 4
    assert seen["links"] == [link_address] and seen["link_events"] == ["start", "stop"]  # one for the 4 runs
    assert len(seen["heads"]) == heads and all(h.events == ["start", "stop"] for h in seen["heads"])
    assert all(h.num_cpus == 3 for h in seen["heads"])  # the slots `federation` deals clients to
    again = R.run_sweep(_heart(("fedavg", "fedkper"), 2), tmp_path)  # all kept: nothing starts
    assert [r["status"] for r in again] == ["finished:completed"] * 4 and len(seen["heads"]) == heads


def test_a_ray_head_that_does_not_start_leaves_each_run_its_own_ray(tmp_path, monkeypatch, capsys):
    R, seen = _fake_sweep(monkeypatch, head_fails=True)
    rows = R.run_sweep(_heart(), tmp_path)
    assert [r["status"] for r in rows] == ["finished:completed"] and seen["links"] == [None]
    assert "no Ray head for the sweep (ray start did not come up); each run starts its own Ray" in capsys.readouterr().out


def test_a_ray_head_that_died_is_replaced_before_the_next_run(tmp_path, monkeypatch, capsys):
    box = {}

    def launch(config, **_):
        box["seen"]["heads"][-1].dead = config["seed"] == 0  # the head crashes during seed 0's run
        return _completed_run(config)

    R, box["seen"] = _fake_sweep(monkeypatch, launch=launch)
    seen = box["seen"]
    rows = R.run_sweep(_heart(seeds=2), tmp_path)
    assert [r["status"] for r in rows] == ["finished:completed"] * 2
    assert [h.events for h in seen["heads"]] == [["start", "stop, logs kept"], ["start", "stop"]]
    assert seen["link_events"] == ["start", "stop", "start", "stop"]  # its SuperLink named the dead head
    assert "the sweep's Ray head has stopped" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["launch", "superlink stop"])
def test_an_interrupted_sweep_stops_its_ray_head(tmp_path, monkeypatch, where):
    def launch(config, **_):
        if where == "launch":
            raise KeyboardInterrupt  # Ctrl-C / SIGTERM during a run
        return _completed_run(config)

    R, seen = _fake_sweep(monkeypatch, launch=launch, link_stop_raises=where == "superlink stop")
    with pytest.raises(KeyboardInterrupt):
        R.run_sweep(_heart(), tmp_path)
    assert seen["link_events"] == ["start", "stop"] and [h.events for h in seen["heads"]] == [["start", "stop"]]


def test_cli_no_warm_ray_and_an_absolute_data_dir_reach_the_sweep(tmp_path, monkeypatch):
    from bouquet import cli
    from bouquet.simulations import reproduce as R

    calls = []
    monkeypatch.setattr(R, "reproduce", lambda name, **kw: calls.append(kw))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOUQUET_DATA", "data")  # relative: the runs' processes start elsewhere
    for flag, warm in (([], True), (["--no-warm-ray"], False)):
        assert cli.main(["reproduce", "fedkper", "--quick", *flag]) == 0
        assert calls[-1]["warm_ray"] is warm and calls[-1]["overrides"]["data-dir"] == str(tmp_path / "data")
    assert R.config_mismatch({"method": "fedavg", "data-dir": "/elsewhere"}, {"method": "fedavg", "data-dir": "/here"}) == {}


def test_a_warm_ray_sweep_gives_the_metrics_of_a_ray_per_run_and_leaves_no_ray_behind(tmp_path, monkeypatch, capsys):
    """Real runs: the same two cells (2 clients, 2 rounds) with the sweep's Ray head and with a
    Ray started inside each run write identical metrics.csv; afterwards nothing runs from the
    head's temp dir."""
    import csv

    import psutil

    from bouquet.simulations import launch as L
    from bouquet.simulations import reproduce as R

    heads = []

    class Recorded(L.RayNode):
        def __init__(self, **kw):
            super().__init__(**kw)
            heads.append(self)

    monkeypatch.setattr(R, "RayNode", Recorded)
    small = {"num-server-rounds": 2, "local-epochs": 1}
    for name, warm in (("warm", True), ("cold", False)):
        R.reproduce("fedkper", seeds=(0,), datasets=("heart-disease",), methods=("fedavg", "fedkper"),
                    overrides=small, out=tmp_path / name, warm_ray=warm)
        assert (f"one Ray head for the sweep at {heads[0].address}" in capsys.readouterr().out) is warm
        statuses = [row["status"] for row in csv.DictReader((tmp_path / name / "results.csv").open())]
        assert statuses == ["finished:completed"] * 2
    assert len(heads) == 1
    for cell in ("fedavg_heart-disease_k4_s0", "fedkper_heart-disease_k4_s0"):
        [warm_csv] = (tmp_path / "warm" / "runs" / cell).glob("*/metrics.csv")
        [cold_csv] = (tmp_path / "cold" / "runs" / cell).glob("*/metrics.csv")
        assert warm_csv.read_bytes() == cold_csv.read_bytes() and len(warm_csv.read_bytes()) > 1000
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if str(heads[0].temp_dir) in " ".join(p.info["cmdline"] or [])]
    assert not left and not heads[0].temp_dir.exists()


def _heart_sweep(monkeypatch, fake_launch, out):
    """reproduce() with ``fake_launch`` and no SuperLink, Ray or plots; the fedavg heart-disease cell into ``out``."""
    from bouquet.simulations import reproduce as R

    monkeypatch.setattr(R, "launch", fake_launch)
    monkeypatch.setattr(R, "SuperLink", _NoSuperLink)
    monkeypatch.setattr(R, "RayNode", _NoRayNode)
    monkeypatch.setattr(R, "plot", lambda *a: None)
    return {"datasets": ("heart-disease",), "methods": ("fedavg",), "out": out}


def test_a_table_never_averages_runs_made_with_another_config_nor_counts_a_failed_run_as_a_seed(tmp_path, monkeypatch):
    """Seeds 1 and 2 run again with another learning rate into the folder: a rebuild with the
    preset's config tabulates each cell's newest run made with it (seeds 0 and 1) and names seed 2
    and the key; with the override, the reverse. A failed run is listed, never counted as a seed."""
    import csv
    import json
    from types import SimpleNamespace

    from bouquet.simulations import reproduce as R

    stamps = iter(f"20260101-0000{i:02d}" for i in range(10))

    def fake_launch(config, **_):
        run = Path(config["output-dir"]) / f"fedavg_heart-disease_natural_k4_s{config['seed']}_{next(stamps)}_1"
        run.mkdir(parents=True)
        acc = 0.5 if config["learning-rate"] == 0.02 else 0.9
        (run / "metrics.csv").write_text(f"round,partition_id,metric,value\n1,,global_model@global_test,{acc}\n")
        (run / "summary.json").write_text(json.dumps({"wall_seconds": 1.0, "run_config": _recorded(config)}))
        return SimpleNamespace(ok=True, status="finished:completed", output="")

    common = _heart_sweep(monkeypatch, fake_launch, tmp_path)
    R.reproduce("fedkper", seeds=(0, 1), **common)
    R.reproduce("fedkper", seeds=(1, 2), overrides={"learning-rate": 0.02}, **common)

    def rows():
        return {r["seed"]: r for r in csv.DictReader((tmp_path / "results.csv").open())}

    R.reproduce("fedkper", seeds=(0, 1, 2), rebuild_only=True, **common)
    got = rows()
    assert [got[s]["global_model@global_test"] for s in "01"] == ["0.9", "0.9"]
    assert got["2"]["status"] == R.LEFT_OUT and "learning-rate=0.02" in got["2"]["reason"]
    assert got["2"]["global_model@global_test"] == ""  # never summarised
    table = (tmp_path / "table.md").read_text()
    assert "heart-disease, 4 clients (2 seeds)" in table and "| fedavg | 90.0 ± 0.0 |" in table
    assert "## Runs not in these tables" in table and "learning-rate=0.02 (this preset: 0.01)" in table

    R.reproduce("fedkper", seeds=(0, 1, 2), rebuild_only=True, overrides={"learning-rate": 0.02}, **common)
    got = rows()
    assert [got[s]["global_model@global_test"] for s in "12"] == ["0.5", "0.5"] and got["0"]["status"] == R.LEFT_OUT

    failed = {"method": "fedavg", "dataset": "heart-disease", "clients": 4, "seed": 2, "status": "finished:failed"}
    ok = {"method": "fedavg", "dataset": "heart-disease", "clients": 4, "seed": 0, "status": "finished:completed",
          "global_model@global_test": 0.9}
    _, text = R.report([ok, failed], R.build_preset("fedkper", datasets=("heart-disease",), methods=("fedavg",)))
    assert "(1 seed, no spread)" in text and "| fedavg | heart-disease | 4 | 2 | finished:failed |" in text


def test_the_newest_run_is_the_latest_start_not_the_last_name(tmp_path):
    """Run folders start with the partitioner: a cell rerun after a partitioner change sorts its
    new run before the old one by name; the start stamp decides."""
    import json

    from bouquet.simulations import reproduce as R

    preset = R.build_preset("fedkper", datasets=("heart-disease",), methods=("fedavg",), seeds=(0,))
    cell = tmp_path / "runs" / "fedavg_heart-disease_k4_s0"
    intended = R.run_config_of(preset, "heart-disease", "fedavg", 0)
    for name, acc in (("fedavg_heart-disease_natural_k4_s0_20260101-000000_1", 0.1),
                      ("fedavg_heart-disease_iid_k4_s0_20260102-000000_2", 0.2)):  # newer, sorts first
        (cell / name).mkdir(parents=True)
        (cell / name / "metrics.csv").write_text(f"round,partition_id,metric,value\n1,,global_model@global_test,{acc}\n")
        (cell / name / "summary.json").write_text(json.dumps({"wall_seconds": 1.0, "run_config": _recorded(intended)}))
    assert [p.parent.name[-1] for p in R.completed_runs(cell)] == ["1", "2"]
    assert R.pick_run(cell, intended)[0].parent.name.endswith("_2")
    assert R.scan(preset, tmp_path)[0]["global_model@global_test"] == 0.2


def test_only_keys_a_method_reads_and_how_the_run_was_executed_are_compared():
    from bouquet.simulations import reproduce as R

    # another method's key family (a GeFL run made while fedlpa-concept-map had another default)
    assert R.config_mismatch({"method": "hetero-fedavg", "dataset": "mnist"},
                             {"method": "hetero-fedavg", "dataset": "mnist", "fedlpa-concept-map": "majority"}) == {}
    assert R.config_mismatch({"method": "fedlpa", "dataset": "fashion-mnist"},
                             {"method": "fedlpa", "dataset": "fashion-mnist", "fedlpa-concept-map": "majority"}) \
        == {"fedlpa-concept-map": ("majority", "hungarian")}
    # a key the run predates counts as today's default: the preset's value differs from it
    assert R.config_mismatch({"method": "fedavg", "local-test-split": "per-class"}, {"method": "fedavg"}) \
        == {"local-test-split": ("stratified", "per-class")}
    # how a run was executed
    assert R.config_mismatch({"method": "fedavg", "round-timeout": 7200, "federation-size": 3},
                             {"method": "fedavg", "round-timeout": 3600.0, "federation-size": 2}) == {}


def test_each_row_says_which_commit_computed_it_and_a_mixed_table_says_so(tmp_path, monkeypatch):
    """A kept run is not rerun when only the code changed: results.csv names each run's commit, and
    table.md says when its runs came from more than one (or an unknown, or a modified) checkout."""
    import csv
    import json
    from types import SimpleNamespace

    from bouquet.simulations import reproduce as R

    codes = iter([{"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": True}, None])

    def fake_launch(config, **_):
        run = Path(config["output-dir"]) / f"fedavg_heart-disease_natural_k4_s{config['seed']}_20260101-000000_1"
        run.mkdir(parents=True)
        (run / "metrics.csv").write_text("round,partition_id,metric,value\n1,,global_model@global_test,0.5\n")
        summary = {"wall_seconds": 1.0, "run_config": _recorded(config)}
        if (code := next(codes)) is not None:
            summary["code"] = code
        (run / "summary.json").write_text(json.dumps(summary))
        return SimpleNamespace(ok=True, status="finished:completed", output="")

    common = _heart_sweep(monkeypatch, fake_launch, tmp_path)
    R.reproduce("fedkper", seeds=(0,), **common)
    table = (tmp_path / "table.md").read_text()
    assert "## Which code computed these runs" not in table  # one clean commit: nothing to say
    R.reproduce("fedkper", seeds=(0, 1, 2), **common)  # seed 0 kept; 1 and 2 made by other code
    rows = {r["seed"]: r["commit"] for r in csv.DictReader((tmp_path / "results.csv").open())}
    assert rows == {"0": "aaaaaaa", "1": "bbbbbbb+dirty", "2": "unrecorded"}
    table = (tmp_path / "table.md").read_text()
    assert "## Which code computed these runs" in table
    assert "`aaaaaaa` (1), `bbbbbbb+dirty` (1), `unrecorded` (1)" in table
