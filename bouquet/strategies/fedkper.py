"""FedKPer server: the mean of the uploads weighted by each client's reliability ×
label-diversity score (``fedkper-score``, Flower's ``weighted_by_key``), not by its size;
sample-size FedAvg when a score is NaN or all are 0. The lr schedule is ``lr-decay``."""

from __future__ import annotations

import math
from collections.abc import Iterable
from logging import WARNING

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from bouquet import metrics as M
from bouquet.clients.fedkper import SCORE
from bouquet.strategies.base import BouquetStrategy, aggregate_metric_records


class FedKPerStrategy(BouquetStrategy, FedAvg):
    weight_key = SCORE
    weight_range = (0.0, 1.0 + 1e-6)  # max(acc, 0) · (1e-6 + entropy / log C)
    nan_weight_ok = True  # a NaN score makes the round sample-size FedAvg, as the code does

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        scores = [m.content["metrics"].get(SCORE, math.nan) for m in replies]
        if all(isinstance(s, int | float) and math.isfinite(s) for s in scores) and sum(scores) > 0:
            return super().aggregate_train(server_round, replies)
        log(WARNING, "round %d: FedKPer scores %s are unusable; falling back to sample-size FedAvg", server_round, scores)
        contents = [m.content for m in replies]
        return (aggregate_arrayrecords(contents, M.NUM_EXAMPLES) if contents else None,
                aggregate_metric_records(contents, M.NUM_EXAMPLES) if contents else None)
