"""Local-only training: clients never average; the server only collects metrics."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg

from bouquet.strategies.base import BouquetStrategy, aggregate_metric_records


class LocalStrategy(BouquetStrategy, FedAvg):
    """There is no global model: replies carry metrics only and the arrays stay as they were."""

    has_global_model = False
    server_evaluates = False

    def configure_evaluate(self, server_round, arrays, config, grid):
        return []  # the local models were scored in their training replies

    def aggregate_train(self, server_round, replies):
        contents = [m.content for m in replies]
        return None, (aggregate_metric_records(contents, self.weight_key) if contents else None)
