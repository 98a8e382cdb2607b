"""DP-SGD-ULS (Chua et al., arXiv 2407.07737) around any Bouquet method that sends a model
update, built on Flower's ``DifferentialPrivacyClientSideFixedClipping`` wrapper.

Flower's wrapper sends the clipping norm to the clients (``fixedclipping_mod`` clips there)
and adds N(0, (σC/m)²) to the mean of m updates. What user-level sampling also needs, added here:
- Poisson sampling of users at rate q (the cohort size varies, and may be 0);
- the fixed denominator: the release is g + (Σ clip(Δ_u) + N(0, σ²C²)) / (qN), which is
  Flower's noisy mean rescaled by m/(qN), with Flower's noise std taken at the actual m;
- equal weights: each user counts once, whatever its size (the analysis is of the sum);
- the PLD accountant and the budget (``bouquet.privacy.budget``), and noise from the run's
  DP randomness (seeded or CSPRNG) instead of numpy's global generator.
The server enforces the clip itself (the reply gate's update bound = C), so a client that
skips ``fixedclipping_mod`` changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping

from bouquet.privacy.budget import PrivacyRun
from bouquet.records import contiguous
from bouquet.strategies.rounds import bouquet_layer


def _trained(array: np.ndarray) -> bool:
    """Float arrays are trained and released with noise; integer counters stay the global's."""
    return np.issubdtype(array.dtype, np.floating)


class UserLevelSampling(DifferentialPrivacyClientSideFixedClipping):
    def __init__(self, strategy, privacy: PrivacyRun) -> None:
        p = privacy.plan
        super().__init__(strategy, p.noise_multiplier, p.clip, num_sampled_clients=1)
        self.privacy = privacy
        self.hooks = bouquet_layer(strategy)
        self.hooks.gate.freeze_integer = True  # counters (e.g. BatchNorm's) keep the global value
        self._global: ArrayRecord | None = None
        self._round = 0

    def __repr__(self) -> str:
        return "DP-SGD-ULS (user-level sampling) around Flower's client-side fixed clipping wrapper"

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.privacy.check_next(server_round)
        self._global, self._round = arrays, server_round
        p = self.privacy.plan  # the mechanism in force (a resumed run's comes from its checkpoint)
        self.noise_multiplier, self.clipping_norm = p.noise_multiplier, p.clip
        self.hooks.gate.update_bound = min(p.clip, self.hooks.cfg.max_update_norm or p.clip)  # enforced here too
        config["dp-k"] = p.k
        nodes = list(grid.get_node_ids())
        cohort = self.privacy.random.poisson_sample(nodes, self.privacy.plan.sampling_rate, server_round)
        self.hooks.global_arrays = arrays  # the reference replies are checked against
        if not cohort:
            return []  # the round still releases: noise alone (aggregate_train with no replies)
        return super().configure_train(server_round, arrays, config, grid.restricted(cohort))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        weight_key = self.hooks.weighted_by_key
        for msg in replies:  # one user, one vote: the sensitivity of the sum is C
            metrics = msg.content["metrics"]
            metrics[weight_key] = 1.0
        p, g = self.privacy.plan, self._global
        metrics = None
        if replies:
            self.num_sampled_clients = len(replies)  # Flower's noise std σC/m, at the m it averages
            mean, metrics = super().aggregate_train(server_round, replies)
            if mean is None:
                raise RuntimeError("the inner strategy released nothing")
            scale = len(replies) / p.denominator
            out = {k: g[k].numpy().astype(np.float64) + scale * (mean[k].numpy().astype(np.float64)
                                                                   - g[k].numpy().astype(np.float64)) for k in g.keys()}
        else:
            out = {k: g[k].numpy().astype(np.float64)
                   + self.privacy.noise(g[k].numpy().shape, p.noise_std, server_round, k) for k in g.keys()}
        self.privacy.spend(server_round)
        released = ArrayRecord({k: Array(contiguous(
            v.astype(g[k].numpy().dtype) if _trained(g[k].numpy()) else g[k].numpy())) for k, v in out.items()})
        return released, metrics

    def _add_noise_to_aggregated_arrays(self, aggregated_arrays: ArrayRecord) -> ArrayRecord:
        """Flower's noise step (std σC/m on the mean), drawn from the run's DP randomness."""
        std = self.noise_multiplier * self.clipping_norm / self.num_sampled_clients
        return ArrayRecord({k: Array(contiguous(
            (v.numpy().astype(np.float64) + self.privacy.noise(v.numpy().shape, std, self._round, k)).astype(v.numpy().dtype)
            if _trained(v.numpy()) else v.numpy())) for k, v in aggregated_arrays.items()})

    def state_arrays(self) -> dict[str, np.ndarray]:
        return self.privacy.state_arrays()

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.privacy.load_state_arrays(arrays)
