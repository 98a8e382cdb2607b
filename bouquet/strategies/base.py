"""The hooks a Bouquet method adds to a Flower strategy: what its replies may carry, what
it sends each round, what it carries between rounds.

:class:`BouquetStrategy` is a mixin placed before a Flower strategy class
(``class FedAvgStrategy(BouquetStrategy, FedAvg)``). It does not override ``aggregate_train``:
the aggregation math stays Flower's, so Flower's wrappers (``DifferentialPrivacy*``, with an
accountant) accept a Bouquet FedAvg. Screening, sorting, recording and resume live around the
strategy (``bouquet.strategies.gate``, ``bouquet.strategies.rounds``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from bouquet import metrics as M
from bouquet.config import RunConfig
from bouquet.federation import ClientDirectory
from bouquet.results import RunRecorder
from bouquet.strategies.gate import ReplyGate
from bouquet.strategies.replies import ReplyRules


def aggregate_metric_records(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Weighted mean of client metrics that leaves ids and counts out (Flower's averages all)."""
    rows = [dict(next(iter(r.metric_records.values()))) for r in records]
    return MetricRecord(M.weighted_mean(rows, weighting_key))


class BouquetStrategy:
    """Mixin: a method's rules and per-round values; ``self.gate`` screens its replies."""

    has_global_model = True  # replies carry arrays shaped like the global model
    server_evaluates = True  # the server can score the global model on its own data
    weight_key = M.NUM_EXAMPLES  # Flower's weighted_by_key
    weight_range = (0.0, float("inf"))  # bounds of a weight other than num-examples
    nan_weight_ok = False  # a NaN weight is let through (the method falls back)
    extra_records: tuple[str, ...] = ()  # ArrayRecords a train reply carries besides "arrays"
    replies_are_models = True  # False: a reply is itself an update (ELS's gradient sum)

    def __init__(self, *, cfg: RunConfig, clients: ClientDirectory, recorder: RunRecorder, **kwargs) -> None:
        super().__init__(
            fraction_train=cfg.fraction_train,
            fraction_evaluate=cfg.fraction_evaluate,
            min_train_nodes=1,
            min_evaluate_nodes=1,
            min_available_nodes=1,
            weighted_by_key=self.weight_key,
            train_metrics_aggr_fn=aggregate_metric_records,
            evaluate_metrics_aggr_fn=aggregate_metric_records,
            **kwargs,
        )
        self.cfg, self.clients, self.recorder = cfg, clients, recorder
        self.global_arrays: ArrayRecord | None = None
        self.max_examples: Mapping[int, float] = {}  # partition id -> the most examples it may weigh (DP: ≤ k)
        self.partition_sizes: Mapping[int, float] = {}  # partition id -> its size, where the server knows it
        self.max_examples_total = float("inf")  # every sample of the dataset (bounds the count metrics)
        # 0 under DP: a round releases (noise) whatever the number of replies, a data-dependent count
        self.min_sound_replies = 0 if cfg.dp_mode != "none" else cfg.min_replies
        self.gate = ReplyGate(self)

    # --- hooks for methods -------------------------------------------------------------
    def extra_problem(self, content: RecordDict) -> str | None:
        """Method-specific checks of a train reply's other records (None = sound)."""
        return None

    def partition_problem(self, pid: int, content: RecordDict) -> str | None:
        """Checks of a train reply that depend on who sent it (None = sound)."""
        return None

    def rules(self, pid: int, phase: str) -> ReplyRules:
        """What partition ``pid``'s reply may carry in ``phase`` (evaluate replies: metrics
        only, averaged by num-examples)."""
        inf = float("inf")
        limits = {"max_examples": self.max_examples.get(pid, inf), "max_count": self.max_examples_total,
                  "max_local_count": self.partition_sizes.get(pid, self.max_examples.get(pid, inf))}
        if phase != "train":
            return ReplyRules(frozenset(), **limits)
        return ReplyRules(frozenset({"arrays", *self.extra_records}), weight_key=self.weight_key,
                          weight_range=self.weight_range, nan_weight_ok=self.nan_weight_ok, **limits)

    def round_config(self, server_round: int) -> dict[str, float | int | str]:
        """Per-round values sent to clients next to the arrays: the lr, decayed by ``lr-decay``
        per round (FedKPer's ×0.99 schedule, kept on the server as its StepLR)."""
        return {"lr": self.cfg.learning_rate * self.cfg.lr_decay ** (server_round - 1)}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """What the strategy carries from round to round besides the global arrays (saved in
        every checkpoint; e.g. FedLoG's global synthetic nodes)."""
        return {}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_arrays` when a run resumes."""

    # --- Flower's strategy methods ------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.global_arrays = arrays
        for key, value in self.round_config(server_round).items():
            config[key] = value
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Evaluate replies carry no training weight (FedKPer's score): average by size."""
        contents = [m.content for m in replies]
        return aggregate_metric_records(contents, M.NUM_EXAMPLES) if contents else None
