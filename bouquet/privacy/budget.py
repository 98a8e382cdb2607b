"""One run's user-level DP: the mechanism fixed before round 1 (k, q, σ, C, δ, the
denominator), the ε spent after every release, and a budget that refuses the round that
would exceed it, also after ``resume-from`` or a raised ``num-server-rounds`` (the mechanism
comes back from the checkpoint, never re-calibrated for the new round count)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from logging import INFO

import numpy as np
from flwr.common import log

from bouquet.config import RunConfig
from bouquet.metrics import EPSILON
from bouquet.privacy.accounting import PrivacyLedger, calibrate_noise
from bouquet.privacy.contribution import els_default_k, uls_default_k
from bouquet.privacy.noise import Randomness
from bouquet.strategies.rounds import Stop

JOURNAL = "privacy-releases.json"  # written at every release, before the model leaves the server

# What the guarantee covers (summary.json "privacy"); methods add their own uncovered records.
COVERED = ("the sequence of global models released after every round, and everything computed from them alone "
           "(the final model, checkpointed models; server-side scores on data outside the users)")
NOT_COVERED = (
    "the server's own view of each update before noise: the server is trusted (central DP; no secure aggregation)",
    "client metrics in every reply (losses, accuracies, num-examples, update norms) and the files written from them "
    "(metrics.csv client rows, partition.csv/png): private to the operator, never publish them",
    "which users exist and how many examples each has (the contribution bound k is computed from partition sizes)",
    "floating-point attacks on the noise's low-order bits (Mironov 2012)",
)


class BudgetExhausted(Stop):
    """The next release would spend more than ``dp-epsilon``."""


@dataclass(frozen=True)
class PrivacyPlan:
    algorithm: str  # "uls" | "els"
    noise_multiplier: float
    clip: float
    sampling_rate: float  # uls: per user per round; els: per example per round
    delta: float
    k: int  # examples kept per user (0: not bounded, ULS on graphs)
    users: int
    denominator: float  # expected cohort (uls: qN) or expected batch (els: q·Σ min(n, k))
    budget: float  # ε the run may spend; inf = no budget (ε is still reported)

    @property
    def noise_std(self) -> float:
        """Std of the noise in the averaged update: σC / denominator."""
        return self.noise_multiplier * self.clip / self.denominator


def plan(cfg: RunConfig, counts: Mapping[int, int], bounded: bool = True) -> PrivacyPlan:
    """The mechanism for this run, from the config and each user's example count;
    ``bounded=False``: users are not cut to k examples (graphs; ULS only), k = 0."""
    sizes = [int(n) for n in counts.values()]
    users, rounds = len(sizes), cfg.num_server_rounds
    if users == 0:
        raise ValueError("dp: the server knows no partition sizes, so k and the sensitivity cannot be fixed")
    delta = cfg.dp_delta or 1.0 / users**2
    algorithm, q = cfg.dp_mode, cfg.dp_sampling_rate
    if not bounded:  # a graph client is one user with its whole subgraph: no k (ULS's analysis needs none)
        k = 0
    elif cfg.dp_k:
        k = cfg.dp_k
    elif algorithm == "uls" and cfg.dp_epsilon > 0:
        # the paper's rule at fixed compute: B = q·N·median examples a round, the k of least predicted noise
        k = uls_default_k(sizes, q * users * els_default_k(sizes), rounds, cfg.dp_epsilon, delta)
        q = min(1.0, q * users * els_default_k(sizes) / sum(min(n, k) for n in sizes))
    else:
        k = els_default_k(sizes)
    kept = sum(min(n, k or n) for n in sizes)
    sigma = (calibrate_noise(algorithm, cfg.dp_epsilon, q, rounds, delta, max(k, 1)) if cfg.dp_epsilon > 0
             else cfg.dp_noise_multiplier)
    denominator = q * users if algorithm == "uls" else q * kept
    return PrivacyPlan(algorithm, float(sigma), cfg.dp_clip, float(q), float(delta), int(k), users,
                       float(denominator), cfg.dp_epsilon or math.inf)


class PrivacyRun:
    """The plan, its ledger, the randomness, and the count of releases so far."""

    def __init__(self, plan: PrivacyPlan, cfg: RunConfig, recorder=None) -> None:
        self.plan, self.recorder = plan, recorder
        self.journal = None if recorder is None else recorder.run_dir / JOURNAL
        self.random = Randomness(cfg.seed, cfg.dp_secure_noise)
        self.method = cfg.method
        self.evaluated_on_users = False  # set by the server when its test set is the users' own data
        self.releases = 0
        self._ledger()
        if plan.noise_multiplier > 0:
            self.ledger.epsilon_after(1)  # an accountant that cannot run fails here, before round 1

    def _ledger(self) -> None:
        p = self.plan
        self.ledger = PrivacyLedger(p.algorithm, p.noise_multiplier, p.sampling_rate, p.delta, max(p.k, 1))

    @property
    def epsilon(self) -> float:
        return self.ledger.epsilon_after(self.releases) if self.releases else 0.0

    def check_next(self, server_round: int) -> None:
        """Raise :class:`BudgetExhausted` before a round whose release would exceed the budget."""
        if math.isinf(self.plan.budget):
            return
        after = self.ledger.epsilon_after(self.releases + 1)
        if after > self.plan.budget:
            raise BudgetExhausted(
                f"privacy budget: round {server_round} would raise epsilon from {self.epsilon:.4g} to {after:.4g} > "
                f"dp-epsilon={self.plan.budget:g} (delta={self.plan.delta:.3g}); stopped after {self.releases} "
                "release(s), everything written so far is kept")

    def spend(self, server_round: int) -> float:
        """Count one release. Journaled at once: a server killed after this round's release but
        before its checkpoint would otherwise release the round again, uncounted, on resume."""
        self.releases += 1
        eps = self.epsilon
        if self.journal is not None:
            tmp = self.journal.with_suffix(".tmp")
            tmp.write_text(json.dumps({"releases": self.releases, "round": server_round,
                                       "epsilon": eps if math.isfinite(eps) else None}))
            tmp.replace(self.journal)
        if self.recorder is not None:
            self.recorder.server_metrics(server_round, {EPSILON: eps})
        log(INFO, "[bouquet] round %d: user-level DP release %d, epsilon spent %.4g (delta %.3g)",
            server_round, self.releases, eps, self.plan.delta)
        return eps

    def noise(self, shape: tuple[int, ...], std: float, server_round: int, name: str) -> np.ndarray:
        return self.random.gaussian(shape, std, "noise", server_round, name)

    # --- checkpoint -------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        p = self.plan
        return {"dp/releases": np.array([self.releases]),
                "dp/mechanism": np.array([p.noise_multiplier, p.clip, p.sampling_rate, p.delta, p.k, p.denominator])}

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """A resumed run keeps the mechanism it was started with (σ is not re-calibrated for a
        raised num-server-rounds); the budget is the config's."""
        if "dp/mechanism" not in arrays:
            return
        sigma, clip, q, delta, k, denominator = (float(v) for v in arrays["dp/mechanism"])
        self.plan = replace(self.plan, noise_multiplier=sigma, clip=clip, sampling_rate=q, delta=delta, k=int(k),
                            denominator=denominator)
        self.releases = int(arrays["dp/releases"][0])
        if self.journal is not None and self.journal.is_file():  # releases after the checkpoint count too
            self.releases = max(self.releases, int(json.loads(self.journal.read_text())["releases"]))
        self._ledger()
        log(INFO, "[bouquet] dp: resumed after %d release(s), epsilon spent %.4g", self.releases, self.epsilon)

    def summary(self) -> dict:
        """summary.json's "privacy": the mechanism, ε spent, and what is and is not covered."""
        not_covered = list(NOT_COVERED)
        if self.evaluated_on_users:
            not_covered.insert(0, "the server-side scores and the evaluator state in checkpoints: this dataset has no "
                                  "test set outside the users, so the server scores the union of the users' local test "
                                  "splits")
        p = asdict(self.plan)
        p["budget"] = None if math.isinf(self.plan.budget) else self.plan.budget
        return {**p, "unit": "user (all examples of one partition); add/remove one user",
                "accountant": "dp-accounting PLD; " + ("Poisson-subsampled Gaussian" if self.plan.algorithm == "uls"
                                                       else "mixture of Gaussians over Binomial(k, q) (tight)"),
                "releases": self.releases,
                "epsilon_spent": self.epsilon if math.isfinite(self.epsilon) else None,  # None: no guarantee (sigma 0)
                "noise_source": "os.urandom" if self.random.secure else "run seed (reproducible, not for deployment)",
                "covered": COVERED, "not_covered": not_covered}
