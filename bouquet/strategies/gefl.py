"""Heterogeneous client models (GeFL, Kang et al., arXiv 2412.18460, and its baselines).

The global "model" is a bundle (``bouquet.models.hetero``): every architecture's weights under
``arch{m}.`` and, for GeFL, the generator under ``gen.``. Each client reports the architecture it
runs (``model-arch``; the first one a partition reports is pinned, a later change is rejected)
and the server averages each architecture among the clients that run it; an architecture with
no sound reply this round keeps its weights. What else is averaged depends on the phase:

- ``warmup`` (GeFL-F's first ``gefl-fe-rounds``; every round of LG-FedAvg): the shared first
  block ``arch*.fe.`` is averaged over *all* clients and written into every architecture.
- ``generator`` (GeFL's first ``gefl-gen-rounds``): the generator, averaged over all clients
  (BN buffers included, as the authors' ``FedAvg``); the target nets are left alone.
- ``target``: per-architecture averaging; GeFL-F keeps the frozen first block fixed; GeFL with
  ``gefl-share-first-block`` also averages the first block over all clients, as the released code
  does by default (``--avg_FE 1``: ``LGFedAvg`` in ``GeFL_CVAE.py`` / ``GeFL_DCGAN.py``).

The authors average uniformly (``model_wise_FedAvg``); Bouquet weights by ``num-examples``,
which is the same with the paper's equal shards.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from bouquet import metrics as M
from bouquet.config import RunConfig
from bouquet.models.hetero import NUM_ARCHS
from bouquet.records import to_record
from bouquet.strategies.base import BouquetStrategy, aggregate_metric_records

MODEL_ARCH = M.MODEL_ARCH  # the metric each reply carries: the architecture the client trained
PHASE = M.GEFL_PHASE  # server metric: 0 warm-up, 1 generator, 2 target
PHASE_ROUND = M.GEFL_PHASE_ROUND  # server metric: the round's index within its phase (1-based)
PHASE_CODES = {"warmup": 0, "generator": 1, "target": 2}
GENERATIVE = ("gefl", "gefl-f")


def schedule(cfg: RunConfig) -> list[tuple[str, int]]:
    """(phase, index within the phase) for every round 1..num-server-rounds."""
    phases: list[str] = []
    if cfg.method == "gefl-f":
        phases += ["warmup"] * cfg.gefl_fe_rounds
    if cfg.method in GENERATIVE:
        phases += ["generator"] * cfg.gefl_gen_rounds
    phases += ["warmup" if cfg.method == "lg-fedavg" else "target"] * (cfg.num_server_rounds - len(phases))
    seen: dict[str, int] = {}
    out = []
    for p in phases:
        seen[p] = seen.get(p, 0) + 1
        out.append((p, seen[p]))
    return out


def phase_of(cfg: RunConfig, server_round: int) -> tuple[str, int]:
    return schedule(cfg)[server_round - 1]


def checkpoint_round(cfg: RunConfig, server_round: int) -> bool:
    """The authors evaluate at a phase's round 1, every 10th round and its last round
    (``utils/util.evaluate_models``); their number is the best of these, per architecture.
    Bouquet's server scores the nets at these rounds only (and round 0, the initial nets)."""
    plan = schedule(cfg)
    phase, index = plan[server_round - 1]
    if phase == "generator":
        return False
    last = sum(p == phase for p, _ in plan)
    return index == 1 or index % 10 == 0 or index == last


def _weighted_mean(arrays: list[np.ndarray], weights: list[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    mean = sum(wi * a.astype(np.float64) for wi, a in zip(w, arrays))
    return np.asarray(np.rint(mean) if not np.issubdtype(arrays[0].dtype, np.floating) else mean).astype(arrays[0].dtype)


def aggregate_bundle(global_arrays: dict[str, np.ndarray], replies: list[tuple[int, float, dict[str, np.ndarray]]],
                     phase: str, *, share_fe: bool, freeze_fe: bool, average: bool = True) -> dict[str, np.ndarray]:
    """The new bundle from (architecture, weight, arrays) replies (pure numpy, tested by hand).

    ``generator``: only ``gen.`` keys change (mean over all replies). Otherwise ``arch{m}.``
    keys are the mean over the replies of architecture m (``average=False``: the first such
    reply, i.e. the lowest partition id, for "each architecture trained alone"); with
    ``share_fe`` the ``fe.`` keys of every architecture become the mean over all replies;
    with ``freeze_fe`` they keep the global value."""
    new = dict(global_arrays)
    if not replies:
        return new
    if phase == "generator":
        for key in (k for k in global_arrays if k.startswith("gen.")):
            new[key] = _weighted_mean([r[2][key] for r in replies], [r[1] for r in replies])
        return new
    for m in range(NUM_ARCHS):
        own = [r for r in replies if r[0] == m]
        if not own:
            continue  # no client of this architecture this round: its weights are kept
        if not average:
            own = own[:1]
        for key in (k for k in global_arrays if k.startswith(f"arch{m}.")):
            new[key] = _weighted_mean([r[2][key] for r in own], [r[1] for r in own])
    fe_keys = [k for k in global_arrays if k.startswith("arch") and ".fe." in k]
    for key in fe_keys:
        if freeze_fe:
            new[key] = global_arrays[key]
        elif share_fe:
            suffix = key.split(".", 1)[1]
            new[key] = _weighted_mean([r[2][f"arch{r[0]}.{suffix}"] for r in replies], [r[1] for r in replies])
    return new


class GeFLStrategy(BouquetStrategy, FedAvg):
    """Per-architecture averaging and GeFL's phases for ``gefl``, ``gefl-f`` and the
    heterogeneous baselines (the method name selects the behaviour, see ``schedule``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pinned: dict[int, int] = {}  # partition id -> the architecture it first reported

    def round_config(self, server_round: int) -> dict[str, float | int | str]:
        phase, index = phase_of(self.cfg, server_round)
        self.recorder.server_metrics(server_round, {PHASE: PHASE_CODES[phase], PHASE_ROUND: index})
        return {**super().round_config(server_round), "phase": phase, "phase-round": index}

    def partition_problem(self, pid: int, content: RecordDict) -> str | None:
        metrics = content["metrics"]
        arch = metrics.get(MODEL_ARCH)
        if not isinstance(arch, int) or isinstance(arch, bool) or not 0 <= arch < NUM_ARCHS:
            return f"'{MODEL_ARCH}'={arch!r} is not an architecture id in [0, {NUM_ARCHS - 1}]"
        if metrics.get(M.PARTITION_ID) != pid:
            return f"'{M.PARTITION_ID}'={metrics.get(M.PARTITION_ID)!r} is not the sender's partition {pid}"
        pinned = self.pinned.setdefault(pid, arch)
        if arch != pinned:
            return f"'{MODEL_ARCH}'={arch} but partition {pid} runs architecture {pinned}"
        return None

    def state_arrays(self) -> dict[str, np.ndarray]:
        pids = sorted(self.pinned)
        return {"pinned": np.array([[p, self.pinned[p]] for p in pids], dtype=np.int64).reshape(-1, 2)}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.pinned = {int(p): int(a) for p, a in arrays.get("pinned", np.zeros((0, 2), np.int64))}

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        contents = [m.content for m in replies]
        if not contents:
            return None, None
        phase, _ = phase_of(self.cfg, server_round)
        got = [(int(c["metrics"][MODEL_ARCH]), float(c["metrics"][M.NUM_EXAMPLES]),
                {k: v.numpy() for k, v in c["arrays"].items()}) for c in contents]
        base = {k: v.numpy() for k, v in self.global_arrays.items()}
        method = self.cfg.method
        shared = phase == "warmup" or (phase == "target" and self.cfg.gefl_share_first_block)
        new = aggregate_bundle(base, got, phase, share_fe=shared,
                               freeze_fe=method == "gefl-f" and phase == "target",
                               average=method != "hetero-local")
        return (to_record(new),
                aggregate_metric_records(contents, M.NUM_EXAMPLES))
