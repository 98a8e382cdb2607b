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
