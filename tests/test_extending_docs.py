"""docs/extending.md stays true: its excerpts are real code, the names it cites exist, and its
`fedavg-clip` skeleton (client module, registry line, config field, pyproject key, test file)
works when dropped in, here registered temporarily instead of edited into the package."""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import bouquet.config
from bouquet import registry
from bouquet.clients.base import ClientCall, model_to_arrays
from bouquet.clients.fedavg import FedAvgClient
from bouquet.config import ConfigError, RunConfig, _range

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "extending.md").read_text()
MARKED = dict(re.findall(r"<!-- extending-docs: (\S+) -->\s*```\w+\n(.*?)```", DOC, re.S))
NEW_FILES = {"bouquet/clients/fedavg_clip.py", "tests/clients/test_fedavg_clip.py", "docs/methods/fedavg-clip.md"}


def test_doc_marks_every_skeleton_piece():
    assert set(MARKED) == {"bouquet/clients/fedavg_clip.py", "registry", "config", "pyproject",
                           "tests/clients/test_fedavg_clip.py"}


def test_cited_paths_exist():
    paths = set(re.findall(r"`((?:bouquet|tests|docs|scripts)/[\w./-]+)`", DOC)) - NEW_FILES
    assert paths, "no paths found"
    assert [p for p in sorted(paths) if not (ROOT / p).exists()] == []


CITED = {
    "bouquet.datasets.files": ["CHECKSUMS", "DOWNLOADABLE", "_maybe_download", "dataset_files"],
    "bouquet.datasets.loaders": ["DATASETS", "GRAPH_DATASETS", "GROUPED_DATASETS", "NUM_CLASSES", "_LOADERS"],
    "bouquet.datasets.client_data": ["_EXACT_NATURAL", "_local_split", "global_test"],
    "bouquet.datasets.partition": ["valid_partitioners"],
    "bouquet.datasets.arrays": ["ArrayDataset", "stratified_split", "SPLIT_SEED"],
    "bouquet.datasets.graph": ["GraphDataset"],
    "bouquet.datasets.images": ["load_breastmnist", "_to_float_images"],
    "bouquet.datasets.tabular": ["load_heart_disease", "HOSPITALS"],
    "bouquet.datasets.exported": ["ModelInfo"],
    "bouquet.models.factory": ["build_model"],
    "bouquet.models.nets": ["SAGE", "SmallCNN", "FedAvgCNN", "MLP", "CharLSTM"],
    "bouquet.preflight": ["check_data"],
    "bouquet.metrics": ["NUM_EXAMPLES", "TRAIN_LOSS", "CORRECT", "name", "count_key", "track_forgetting"],
    "bouquet.clients.base": ["ClientCall", "ClientReply", "ClientLogic", "Arrays", "arrays_to_model",
                             "model_to_arrays"],
    "bouquet.clients.training": ["setting_scores", "train_local", "distill_from", "BatchLoss"],
    "bouquet.device": ["device", "to_device", "to_numpy"],
    "bouquet.clients.fedavg": ["FedAvgClient"],
    "bouquet.clients.fedntd": ["FedNTDClient", "ntd_loss"],
    "bouquet.clients.ditto": ["DittoClient"],
    "bouquet.clients.local": ["LocalClient"],
    "bouquet.strategies.base": ["BouquetStrategy"],
    "bouquet.strategies.fedavg": ["FedAvgStrategy"],
    "bouquet.strategies.fedprox": ["FedProxStrategy"],
    "bouquet.strategies.fedkper": ["FedKPerStrategy"],
    "bouquet.strategies.local": ["LocalStrategy"],
    "bouquet.registry": ["METHODS", "Method", "S", "C"],
    "tests.strategies.helpers": ["make_strategy", "reply", "global_arrays"],
    "tests.test_config": ["test_pyproject_defaults_match_the_dataclass"],
    "tests.datasets.test_loaders": ["ARRAYS", "GRAPHS", "test_registry_covers_every_dataset"],
}


@pytest.mark.parametrize("module", sorted(CITED))
def test_cited_names_exist(module):
    mod = importlib.import_module(module)
    assert [n for n in CITED[module] if not hasattr(mod, n)] == []


def test_cited_hooks_and_prefixes():
    from bouquet.clients.ditto import PREFIX as DITTO
    from bouquet.clients.local import PREFIX as LOCAL
    from bouquet.datasets.exported import ModelInfo
    from bouquet.strategies.base import BouquetStrategy

    assert (DITTO, LOCAL) == ("personal/", "model/")
    for hook in ("extra_loss", "batch_loss", "start_model", "fit", "train", "evaluate"):
        assert callable(getattr(FedAvgClient, hook))
    for hook in ("weight_key", "has_global_model", "server_evaluates", "round_config", "extra_problem",
                 "state_arrays", "load_state_arrays"):
        assert hasattr(BouquetStrategy, hook)
    from flwr.serverapp.strategy import FedAvg
    from bouquet.strategies.fedavg import FedAvgStrategy

    assert FedAvgStrategy.aggregate_train is FedAvg.aggregate_train  # what Flower's accounted DP wrappers require
    assert callable(ModelInfo.stub)
    assert [f.name for f in dataclasses.fields(ClientCall)] == [
        "cid", "num_partitions", "server_round", "run", "arrays", "config", "state", "extras", "data_path", "node_arch"]


def test_excerpts_are_verbatim():
    """Every line of an unmarked, unabridged python block is a line of the package's code."""
    source = {ln.strip() for p in (ROOT / "bouquet").rglob("*.py") for ln in p.read_text().splitlines()}
    marked = set(MARKED.values())
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOC, re.S) if b not in marked and "abridged" not in b]
    assert len(blocks) >= 4
    for block in blocks:
        for line in block.splitlines():
            code = re.sub(r"\s+# .*$", "", line).strip()
            if code and code != "...":
                assert code in source, code


@pytest.fixture
def fedavg_clip(monkeypatch):
    """The skeleton as if it were added: module, RunConfig field, registry line."""
    ns = {"dataclass": dataclass, "field": field, "_range": _range, "Base": RunConfig}
    exec("from __future__ import annotations\n@dataclass(frozen=True)\nclass RunConfig(Base):\n"  # noqa: S102
         + MARKED["config"], ns)
    extended = ns["RunConfig"]
    monkeypatch.setattr(bouquet.config, "RunConfig", extended)

    module = types.ModuleType("bouquet.clients.fedavg_clip")
    module.__file__ = str(ROOT / "bouquet" / "clients" / "fedavg_clip.py")
    exec(compile(MARKED["bouquet/clients/fedavg_clip.py"], module.__file__, "exec"), module.__dict__)  # noqa: S102
    monkeypatch.setitem(sys.modules, module.__name__, module)

    entry = eval("{" + MARKED["registry"] + "}", {"Method": registry.Method, "S": registry.S, "C": registry.C})  # noqa: S307
    assert list(entry) == ["fedavg-clip"]
    monkeypatch.setitem(registry.METHODS, "fedavg-clip", entry["fedavg-clip"])
    return extended, module


def test_pyproject_key_matches_the_config_field(fedavg_clip):
    extended, _ = fedavg_clip
    new = {k: v for k, v in extended().to_run_config().items() if k not in RunConfig().to_run_config()}
    assert new == tomllib.loads(MARKED["pyproject"]) == {"fedavg-clip-norm": 1.0}


def test_registry_resolves_to_the_skeleton_and_fedavg(fedavg_clip):
    from bouquet.strategies.fedavg import FedAvgStrategy

    _, module = fedavg_clip
    method = registry.get_method("fedavg-clip")
    assert method.client is module.FedAvgClipClient and method.strategy is FedAvgStrategy
    with pytest.raises(ConfigError, match="fedavg-clip-norm"):
        fedavg_clip[0].from_run_config({"method": "fedavg-clip", "fedavg-clip-norm": 0.0})


def test_the_docs_test_file_passes(fedavg_clip):
    ns: dict = {"__name__": "tests.clients.test_fedavg_clip"}
    exec(compile(MARKED["tests/clients/test_fedavg_clip.py"], "test_fedavg_clip.py", "exec"), ns)  # noqa: S102
    tests = [f for name, f in ns.items() if name.startswith("test_")]
    assert tests
    for test in tests:
        test()


def test_clip_binds_only_when_the_update_is_longer(fedavg_clip):
    extended, module = fedavg_clip
    client = registry.get_method("fedavg-clip").client()
    cfg = extended.from_run_config({"method": "fedavg-clip", "dataset": "digits", "partitioner": "iid",
                                    "batch-size": 32, "fedavg-clip-norm": 100.0})

    def call(arrays, run=cfg):
        return ClientCall(cid=1, num_partitions=3, server_round=1, run=run, arrays=arrays,
                          config={"lr": 0.05, "server-round": 1})

    start = model_to_arrays(call({}).new_model())
    loose, plain = client.train(call(start)), FedAvgClient().train(call(start))
    for k in start:  # a clip far above the update's norm changes nothing
        np.testing.assert_array_equal(loose.arrays[k], plain.arrays[k])
    tight = client.train(call(start, dataclasses.replace(cfg, fedavg_clip_norm=0.1)))
    norm = np.sqrt(sum(np.sum((tight.arrays[k] - start[k]) ** 2) for k in start))
    assert norm == pytest.approx(0.1, abs=1e-4)
    # the scores are of the model it sends: the clipped step is too short to match FedAvg's
    assert tight.metrics["local_model@local_test"] != plain.metrics["local_model@local_test"]
