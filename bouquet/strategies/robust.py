"""Coordinate-wise robust aggregation (``aggregator = median | trimmed-mean``) as a wrapper
around any strategy, the way Flower's DP wrappers wrap one: the inner strategy still runs its
own aggregation (its side effects, e.g. FedLoG's synthetic nodes, and its metrics), and the
arrays are replaced by the unweighted median / trimmed mean of the sound replies."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from bouquet.strategies.replies import robust_aggregate


class RobustAggregation(Strategy):
    def __init__(self, strategy: Strategy, aggregator: str, trim_fraction: float) -> None:
        super().__init__()
        self.strategy, self.aggregator, self.trim_fraction = strategy, aggregator, trim_fraction

    def __repr__(self) -> str:
        return f"RobustAggregation({self.aggregator}) around {self.strategy!r}"

    def summary(self) -> None:
        self.strategy.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        if not replies:
            return None, None
        robust = robust_aggregate([m.content["arrays"] for m in replies], self.aggregator, self.trim_fraction)
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        return (robust if arrays is not None else None), metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)
