"""Server side of FedLPA and its GCD baselines: FedAvg of the backbone and both heads (Flower's
sample-size-weighted mean); priors and concepts stay on the clients (``clients/fedlpa.py``).

After the shared SSL warm-up the server also scores the global model on the global test set as GCD
does: All / Old / New accuracy under one Hungarian matching over all classes (``hungarian:global_model@
global_test[_old|_new]``). SimGCD-style models predict with the classifier's argmax; ``gcd`` clusters
the test features with k-means (K = the head size; the server holds no labels to anchor it).
``local-simgcd`` averages only during the warm-up; afterwards the global model stays the warm-up's and
each client scores its own model (also on the global test set, in the last round).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
from flwr.serverapp.strategy import FedAvg

from bouquet import metrics as M
from bouquet.strategies.base import BouquetStrategy, aggregate_metric_records


class FedLPAStrategy(BouquetStrategy, FedAvg):
    """FedAvg (weighted by num-examples) + the global-test GCD scores of each new global model."""

    scores_global_model = True
    # the server's generic score (argmax against the class ids) means nothing for discovered clusters:
    # only the Hungarian-matched scores below are recorded for the global model
    server_evaluates = False

    @cached_property
    def _test(self) -> tuple[np.ndarray, np.ndarray] | None:
        from bouquet.config import data_spec  # noqa: PLC0415
        from bouquet.datasets import global_test  # noqa: PLC0415

        return global_test(data_spec(self.cfg, self.clients.num_partitions))

    def score_global(self, server_round: int, arrays) -> dict[str, float]:
        """Hungarian All/Old/New of the global model on the global test set."""
        from bouquet.clients.base import arrays_to_model  # noqa: PLC0415
        from bouquet.clients.fedlpa import embed, hungarian_scores, ss_kmeans  # noqa: PLC0415
        from bouquet.datasets import data_root, load_dataset  # noqa: PLC0415
        from bouquet.registry import get_method  # noqa: PLC0415
        from bouquet.seeding import derive_seed  # noqa: PLC0415

        if self._test is None:
            return {}
        x, y = self._test
        data = load_dataset(self.cfg.dataset, data_root(self.cfg.data_dir))
        model = arrays_to_model(get_method(self.cfg.method).model(self.cfg, data), {k: v.numpy() for k, v in arrays.items()})
        feats, _, probs = embed(model, x)
        if self.cfg.method == "gcd":
            pred = ss_kmeans(feats, probs.shape[1], seed=derive_seed(self.cfg.seed, "server-kmeans", server_round)).numpy()
        else:
            pred = probs.argmax(1).numpy()
        return hungarian_scores("global_model", "global_test", y, pred, self.cfg.gcd_known_classes)

    def configure_evaluate(self, server_round, arrays, config, grid):
        if self.scores_global_model and server_round > self.cfg.gcd_ssl_rounds:
            scores = {k: v for k, v in self.score_global(server_round, arrays).items() if not k.startswith(M.NUM_EXAMPLES)}
            if scores:
                self.recorder.server_metrics(server_round, scores)
        return super().configure_evaluate(server_round, arrays, config, grid)


class LocalSimGCDStrategy(FedLPAStrategy):
    """FedAvg during the shared warm-up, then nothing: the global model stays the warm-up model."""

    scores_global_model = False

    def aggregate_train(self, server_round, replies):
        if server_round <= self.cfg.gcd_ssl_rounds:
            return super().aggregate_train(server_round, replies)
        contents = [m.content for m in replies]
        return self.global_arrays, (aggregate_metric_records(contents, self.weight_key) if contents else None)
