import dataclasses
import tomllib
from pathlib import Path

import pytest

from bouquet.config import ConfigError, RunConfig

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_defaults_match_the_dataclass():
    table = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert table == RunConfig().to_run_config()
    assert RunConfig.from_run_config(table) == RunConfig()


def test_issue_keys_exist():
    keys = set(RunConfig().to_run_config())
    required = {"method", "dataset", "partitioner", "dirichlet-alpha", "classes-per-client",
                "num-server-rounds", "fraction-train", "local-epochs", "batch-size",
                "learning-rate", "proximal-mu", "seed", "output-dir"}
    assert required <= keys


def test_overrides_and_int_for_float():
    cfg = RunConfig.from_run_config({"method": "fedprox", "learning-rate": 1, "num-server-rounds": 3})
    assert (cfg.method, cfg.learning_rate, cfg.num_server_rounds) == ("fedprox", 1.0, 3)
    assert isinstance(cfg.learning_rate, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3


@pytest.mark.parametrize(
    ("key", "value", "expect"),
    [
        ("method", "fedsgd", ["method", "fedavg", "fedprox", "local"]),
        ("dataset", "imagenet", ["dataset", "cora", "fashion-mnist", "heart-disease"]),
        ("partitioner", "metis", ["partitioner", "dirichlet", "louvain", "natural"]),
        ("dirichlet-alpha", -1.0, ["dirichlet-alpha", "(0"]),
        ("dirichlet-alpha", 0.0, ["dirichlet-alpha"]),
        ("fraction-train", 1.5, ["fraction-train", "1]"]),
        ("num-server-rounds", 0, ["num-server-rounds"]),
        ("learning-rate", float("nan"), ["learning-rate"]),
        ("batch-size", "32", ["batch-size", "int"]),
        ("local-epochs", True, ["local-epochs"]),
    ],
)
def test_bad_values_name_the_key(key, value, expect):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_run_config({key: value})
    for piece in expect:
        assert piece in str(err.value)


def test_unknown_key_is_rejected_with_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown run-config key 'learning_rate' \(did you mean 'learning-rate'\?\)"):
        RunConfig.from_run_config({"learning_rate": 0.1})


def test_graph_only_methods_reject_other_datasets():
    with pytest.raises(ConfigError, match=r"dataset='digits' does not suit method='fedlog'; choose one of: cora"):
        RunConfig.from_run_config({"method": "fedlog", "dataset": "digits", "partitioner": "iid"})
    assert RunConfig.from_run_config({"method": "fedavg", "dataset": "digits"}).dataset == "digits"


def test_model_is_refused_by_methods_that_build_their_own_network():
    RunConfig.from_run_config({"method": "fedavg", "dataset": "fashion-mnist", "model": "fedavg-cnn"})
    with pytest.raises(ConfigError, match="model='gcn' with method='fedlog': this method builds its own network"):
        RunConfig.from_run_config({"method": "fedlog", "model": "gcn"})


def test_deploy_local_refuses_a_folder_whose_path_would_break_the_node_config(tmp_path):
    from bouquet.deploy.local import deploy

    with pytest.raises(ValueError, match="quote"):
        deploy(tmp_path / "it's", 1, tls=False, auth=False)
    assert not (tmp_path / "it's").exists()  # refused before anything was created
