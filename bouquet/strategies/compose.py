"""Build a run's strategy: the method's own, then the layers the config asks for, each a
Flower-style wrapper holding the one inside as ``.strategy`` (robust aggregation; user-level
DP). The reply gate and the round loop see through them (``bouquet.strategies.rounds``)."""

from __future__ import annotations

from collections.abc import Mapping
from logging import INFO

from flwr.common import log

from bouquet.config import RunConfig
from bouquet.registry import Method


def build_strategy(method: Method, cfg: RunConfig, clients, recorder, counts: Mapping[int, float], total: float,
                   user_sizes: Mapping[int, int] | None = None):
    """(outermost strategy, the Bouquet layer, the PrivacyRun or None). ``counts`` are the
    partition sizes the server computed (they bound num-examples); ``user_sizes`` the training
    examples each user holds (they fix k and ELS's expected batch; default: ``counts``)."""
    hooks = method.strategy(cfg=cfg, clients=clients, recorder=recorder)
    # Mappings: a million clients need not be listed
    hooks.max_examples, hooks.partition_sizes, hooks.max_examples_total = counts, counts, total
    strategy = hooks
    if cfg.aggregator != "mean":
        from bouquet.strategies.robust import RobustAggregation  # noqa: PLC0415

        strategy = RobustAggregation(strategy, cfg.aggregator, cfg.trim_fraction)
    privacy = None
    if cfg.dp_mode != "none":
        from bouquet.privacy.budget import PrivacyRun, plan  # noqa: PLC0415 (dp-accounting only when used)

        from bouquet.datasets import GRAPH_DATASETS  # noqa: PLC0415

        sizes = user_sizes if user_sizes is not None else {pid: int(n) for pid, n in counts.items()}
        privacy = PrivacyRun(plan(cfg, sizes, bounded=cfg.dataset not in GRAPH_DATASETS), cfg, recorder)
        p = privacy.plan
        if p.k:  # a graph client is one user with its whole subgraph: no k
            hooks.max_examples = {pid: min(n, p.k) for pid, n in counts.items()}  # at most k examples a user
        log(INFO, "[bouquet] dp=%s: k=%d examples per user, q=%.4g, sigma=%.4g, C=%g, delta=%.3g, denominator %.4g%s",
            p.algorithm, p.k, p.sampling_rate, p.noise_multiplier, p.clip, p.delta, p.denominator,
            f", budget epsilon={p.budget:g}" if p.budget != float("inf") else ", no budget (epsilon reported)")
        if p.algorithm == "els":
            hooks.attach(privacy)
        else:
            from bouquet.strategies.userdp import UserLevelSampling  # noqa: PLC0415

            strategy = UserLevelSampling(strategy, privacy)
    return strategy, hooks, privacy
