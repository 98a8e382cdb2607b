"""FedKPer server: the mean of the uploads weighted by each client's reliability ×
label-diversity score (``fedkper-score``, Flower's ``weighted_by_key``), not by its size;
sample-size FedAvg when a score is NaN or all are 0. The lr schedule is ``lr-decay``."""

from __future__ import annotations

import math
from logging import WARNING

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp.strategy import FedAvg

from bouquet import metrics as M
from bouquet.clients.fedkper import SCORE
from bouquet.strategies.base import BouquetStrategy


class FedKPerStrategy(BouquetStrategy, FedAvg):
    weight_key = SCORE
    weight_range = (0.0, 1.0 + 1e-6)  # max(acc, 0) · (1e-6 + entropy / log C)
    nan_weight_ok = True  # a NaN score makes the round sample-size FedAvg, as the code does

    def _aggregate_sound(self, server_round: int, sound: list[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        scores = [m.content["metrics"].get(SCORE, math.nan) for m in sound]
        if all(isinstance(s, int | float) and math.isfinite(s) for s in scores) and sum(scores) > 0:
            return super()._aggregate_sound(server_round, sound)
        log(WARNING, "round %d: FedKPer scores %s are unusable; falling back to sample-size FedAvg", server_round, scores)
        return super()._aggregate_sound(server_round, sound, weight_key=M.NUM_EXAMPLES)
