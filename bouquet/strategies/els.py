"""DP-SGD-ELS (Chua et al., arXiv 2407.07737): one round is one DP-SGD step. Every client
(user) Poisson-samples its ≤ k examples at rate q and sends the sum of their per-example
gradients, each clipped to C; the server sums, adds N(0, σ²C²) once, divides by the expected
batch q·Σ_u min(n_u, k) and steps with the learning rate. User-level ε from the
mixture-of-Gaussians accountant (``bouquet.privacy``). The server bounds each user's sum by
k·C itself (the gate), so a client that skips its own clipping cannot exceed the sensitivity."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from bouquet import metrics as M
from bouquet.privacy.budget import PrivacyRun
from bouquet.records import contiguous
from bouquet.strategies.base import BouquetStrategy, aggregate_metric_records

SAMPLED = "els-sampled"  # examples the client's Poisson draw took this round


class ELSStrategy(BouquetStrategy, FedAvg):
    replies_are_models = False  # a reply is a clipped gradient sum
    weight_key = SAMPLED

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.privacy: PrivacyRun | None = None  # set by bouquet.strategies.compose before round 1

    def attach(self, privacy: PrivacyRun) -> None:
        self.privacy = privacy
        self.gate.freeze_integer = True
        self._bounds()

    def _bounds(self) -> None:
        p = self.privacy.plan  # the mechanism in force (a resumed run's comes from its checkpoint)
        self.weight_range = (0.0, float(p.k))
        self.gate.update_bound = p.k * p.clip  # an honest user's sum: at most k clipped gradients

    def round_config(self, server_round: int) -> dict[str, float | int | str]:
        p = self.privacy.plan
        return {**super().round_config(server_round), "dp-k": p.k, "dp-sampling-rate": p.sampling_rate,
                "dp-clip": p.clip}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.privacy.check_next(server_round)
        self._bounds()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        p, g = self.privacy.plan, self.global_arrays
        lr = float(self.round_config(server_round)["lr"])
        out = ArrayRecord()
        for key in g.keys():
            base = g[key].numpy()
            if not np.issubdtype(base.dtype, np.floating):
                out[key] = Array(contiguous(base))  # counters are not trained
                continue
            total = sum((m.content["arrays"][key].numpy().astype(np.float64) for m in replies), np.zeros(base.shape))
            noisy = total + self.privacy.noise(base.shape, p.noise_multiplier * p.clip, server_round, key)
            out[key] = Array(contiguous((base - lr * noisy / p.denominator).astype(base.dtype)))
        self.privacy.spend(server_round)
        contents = [m.content for m in replies]
        return out, (aggregate_metric_records(contents, M.NUM_EXAMPLES) if contents else None)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return self.privacy.state_arrays() if self.privacy else {}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if self.privacy:
            self.privacy.load_state_arrays(arrays)
