"""One frozen, validated run configuration built from Flower's ``context.run_config``.

Every method reads its settings from :class:`RunConfig`, never from ``run_config["key"]``
directly, so a typo or an out-of-range value fails once, before round 1, with a message
that names the key and what it accepts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bouquet.datasets import DATASETS, PARTITIONERS
from bouquet.datasets.client_data import MISSING_RULES


class ConfigError(ValueError):
    """An invalid run-config key or value; the message names the key."""


def _key(f: dataclasses.Field) -> str:
    return f.name.replace("_", "-")


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    return {"lo": lo, "hi": hi, "lo_open": lo_open}


@dataclass(frozen=True)
class RunConfig:
    """Run settings shared by every method (kebab-case keys in ``pyproject.toml``)."""

    method: str = field(default="fedlog", metadata={"choices": "methods"})
    dataset: str = field(default="cora", metadata={"choices": DATASETS})
    partitioner: str = field(default="louvain", metadata={"choices": PARTITIONERS})
    model: str = field(default="auto", metadata={"choices": ("auto", "fedavg-cnn", "char-lstm-small", "gcn")})
    dirichlet_alpha: float = field(default=0.5, metadata=_range(0.0, None, lo_open=True))
    classes_per_client: int = field(default=2, metadata=_range(1))
    min_partition_size: int = field(default=2, metadata=_range(2))  # dirichlet: least samples per client
    examples_per_client: int = field(default=60, metadata=_range(2))  # iid-draw: rows each client draws
    # dirichlet: a client stops receiving samples once it holds N/n (flwr-datasets' self_balancing; FedKPer's code)
    dirichlet_self_balancing: bool = False
    # a client's local test split: 'stratified' 20 %, or 'per-class' (FedKPer's code: 20 % of the client's
    # size divided equally among the classes it holds, 20 % of a class that has fewer)
    local_test_split: str = field(default="stratified", metadata={"choices": ("stratified", "per-class")})
    # flip rates where there is no earlier model: 'skip' (none recorded) or 'zero' (FedKPer's code: compared
    # with an all-wrong model, so a client's first local NFR and round 1's global NFR are 0)
    forgetting_first_visit: str = field(default="skip", metadata={"choices": ("skip", "zero")})
    # Logical clients (simulation): 0 = one SuperNode per client; N = clients 0..N-1 served in batches by
    # however many SuperNodes run (bouquet.multiplex), their state in a store keyed by client id
    num_clients: int = field(default=0, metadata=_range(0, 100_000_000))
    # How many SuperNodes (partitions) the operator expects: a node claiming another num-partitions is
    # left out. 0 = whatever a strict majority of the answering nodes claims (bouquet run / reproduce /
    # deploy-local set it themselves; set it in a real deployment)
    federation_size: int = field(default=0, metadata=_range(0, 100_000))
    num_server_rounds: int = field(default=20, metadata=_range(1))
    fraction_train: float = field(default=1.0, metadata=_range(0.0, 1.0, lo_open=True))
    fraction_evaluate: float = field(default=1.0, metadata=_range(0.0, 1.0))
    local_epochs: int = field(default=1, metadata=_range(1))
    batch_size: int = field(default=64, metadata=_range(1))
    # keep the local optimizer's state (Adam moments, SGD momentum) across rounds, as FED-PUB's code
    # does for its FedAvg; fedavg, fedprox, fedntd, local only (FED-PUB always keeps its own)
    keep_optimizer_state: bool = False
    learning_rate: float = field(default=0.05, metadata=_range(0.0, None, lo_open=True))
    optimizer: str = field(default="sgd", metadata={"choices": ("sgd", "adam")})
    weight_decay: float = field(default=0.0, metadata=_range(0.0))
    lr_decay: float = field(default=1.0, metadata=_range(0.0, 1.0, lo_open=True))  # lr × this per round
    proximal_mu: float = field(default=0.01, metadata=_range(0.0))
    seed: int = field(default=0, metadata=_range(0))
    output_dir: str = ""
    resume_from: str = ""  # a run folder: continue after its last completed round
    round_timeout: float = field(default=3600.0, metadata=_range(0.0, None, lo_open=True))  # seconds per phase
    min_replies: int = field(default=1, metadata=_range(1))  # sound train replies a round needs to aggregate
    # Untrusted participants (README "Threat model"): the aggregation rule and an update-norm bound
    aggregator: str = field(default="mean", metadata={"choices": ("mean", "median", "trimmed-mean")})
    trim_fraction: float = field(default=0.2, metadata=_range(0.0, 0.5))  # trimmed-mean: cut per side
    max_update_norm: float = field(default=0.0, metadata=_range(0.0))  # L2 clip of each update; 0 = off
    # User-level differential privacy (Chua et al., arXiv 2407.07737; README "Privacy")
    dp: str = field(default="none", metadata={"choices": ("none", "uls", "els")})
    dp_epsilon: float = field(default=0.0, metadata=_range(0.0))  # budget; > 0: sigma calibrated to it
    dp_delta: float = field(default=0.0, metadata=_range(0.0, 0.5))  # 0 = 1 / users^2
    dp_noise_multiplier: float = field(default=1.0, metadata=_range(0.0))  # used when dp-epsilon = 0
    dp_clip: float = field(default=1.0, metadata=_range(0.0, None, lo_open=True))  # C: per user / per example
    dp_sampling_rate: float = field(default=0.1, metadata=_range(0.0, 1.0, lo_open=True))  # uls: users, els: examples
    dp_k: int = field(default=0, metadata=_range(0))  # examples kept per user; 0 = the paper's heuristic
    dp_secure_noise: bool = False  # noise and sampling from the OS's CSPRNG instead of the run seed
    data_dir: str = ""
    graph_unseen_fraction: float = field(default=0.2, metadata=_range(0.0, 0.9))
    graph_missing_classes: int = field(default=1, metadata=_range(0))
    # which classes go missing: drawn among all a client has, or never its largest one
    graph_missing_rule: str = field(default="random", metadata={"choices": MISSING_RULES})
    # share of a client's seen nodes that are labelled for training; validation 0.2, test the rest
    graph_train_fraction: float = field(default=0.6, metadata=_range(0.0, 0.8, lo_open=True))
    # FedLoG (Kim et al., ICLR 2025); defaults follow the authors' argument.py
    fedlog_num_proto: int = field(default=20, metadata=_range(1))
    fedlog_faithful_to: str = field(default="code", metadata={"choices": ("code", "paper")})
    fedlog_tau: float = field(default=3.0, metadata=_range(0.0))
    fedlog_lr: float = field(default=0.001, metadata=_range(0.0, None, lo_open=True))
    fedlog_pretrain_epochs: int = field(default=100, metadata=_range(0))
    fedlog_norm_weight: float = field(default=0.5, metadata=_range(0.0))  # weight of ‖S^H‖_F and ‖S^T‖_F
    # FED-PUB (Baek et al., ICML 2023); defaults follow the authors' Cora script
    fedpub_lr: float = field(default=0.01, metadata=_range(0.0, None, lo_open=True))
    # code: the released code's penalties (summed over detached state_dict tensors: no gradient); paper: trained
    fedpub_faithful_to: str = field(default="code", metadata={"choices": ("code", "paper")})
    fedpub_norm_scale: float = field(default=3.0, metadata=_range(0.0))
    fedpub_l1: float = field(default=0.001, metadata=_range(0.0))
    fedpub_loc_l2: float = field(default=0.001, metadata=_range(0.0))
    fedpub_n_proxy: int = field(default=5, metadata=_range(1))
    # FedKPer (arXiv 2605.00698): KL to the global model with beta = min(1 / CE_global, max-beta)
    fedkper_tau: float = field(default=1.0, metadata=_range(0.0, None, lo_open=True))
    fedkper_max_beta: float = field(default=10.0, metadata=_range(0.0))
    # FedNTD (Lee et al., NeurIPS 2022): not-true distillation
    fedntd_tau: float = field(default=3.0, metadata=_range(0.0, None, lo_open=True))
    fedntd_beta: float = field(default=1.0, metadata=_range(0.0))
    # Ditto (Li et al., ICML 2021): personal model pulled toward the global one
    ditto_lambda: float = field(default=0.1, metadata=_range(0.0))
    # Heterogeneous client models (GeFL, Kang et al., arXiv 2412.18460, and its baselines)
    model_archs: str = field(default="paper", metadata={"choices": ("paper", "cycle", *map(str, range(10)))})
    data_fraction: float = field(default=1.0, metadata=_range(0.0, 1.0, lo_open=True))  # of each training split
    gefl_generator: str = field(default="cvae", metadata={"choices": ("cvae", "dcgan")})
    gefl_gen_rounds: int = field(default=100, metadata=_range(1))  # T_KA: federated generator rounds
    gefl_gen_epochs: int = field(default=5, metadata=_range(1))  # T_g: local generator epochs a round
    gefl_gen_width: int = field(default=8, metadata=_range(1))  # generator channels = the paper's / this
    gefl_fe_rounds: int = field(default=20, metadata=_range(0))  # GeFL-F: first-block warm-up rounds
    gefl_syn_epochs: int = field(default=1, metadata=_range(0))  # T_s: epochs on generated samples
    gefl_released: bool = False  # the released code's input-range mismatch and unsquared FedProx term
    # gefl: average the first block over all clients in target rounds (the released code's avg_FE=1 default)
    gefl_share_first_block: bool = False
    # heterogeneous methods' real training batches (the GeFL code: RandomCrop(32, 4) + HFlip on CIFAR-10 only)
    gefl_augment: str = field(default="none", metadata={"choices": ("none", "crop-flip")})
    # Generalized category discovery (FedLPA and its baselines simgcd, gcd, local-simgcd; clients/fedlpa.py)
    gcd_known_classes: int = field(default=5, metadata=_range(1))  # classes 0..n-1 are known, the rest novel
    gcd_labelled_fraction: float = field(default=0.5, metadata=_range(0.0, 1.0, lo_open=True))  # of known-class images
    gcd_ssl_rounds: int = field(default=5, metadata=_range(0))  # shared federated SimCLR warm-up rounds
    gcd_ssl_temperature: float = field(default=0.5, metadata=_range(0.0, None, lo_open=True))  # its NT-Xent temperature
    gcd_width: int = field(default=32, metadata=_range(1))  # backbone channels w, 2w, 4w
    gcd_head_size: int = field(default=0, metadata=_range(0))  # classifier outputs; 0 = the true number of classes
    gcd_sup_weight: float = field(default=0.35, metadata=_range(0.0, 1.0))  # SimGCD's lambda
    gcd_memax_weight: float = field(default=2.0, metadata=_range(0.0))  # SimGCD's mean-entropy weight
    fedlpa_warmup_rounds: int = field(default=5, metadata=_range(0))  # SimGCD rounds (after SSL) before discovery
    fedlpa_every: int = field(default=5, metadata=_range(1))  # R: rounds between discoveries
    fedlpa_weight: float = field(default=2.0, metadata=_range(0.0))  # epsilon: weight of the alignment term
    fedlpa_kl: str = field(default="mean-prior", metadata={"choices": ("mean-prior", "prior-mean")})
    fedlpa_graph_feature: str = field(default="backbone", metadata={"choices": ("backbone", "projector")})
    fedlpa_knn: int = field(default=80, metadata=_range(1))
    fedlpa_sim_threshold: float = field(default=0.0, metadata=_range(-1.0, 1.0))
    fedlpa_confidence_percentile: float = field(default=0.5, metadata=_range(0.0, 1.0))  # P
    fedlpa_edge_rule: str = field(default="veto", metadata={"choices": ("veto", "confirm", "none")})
    fedlpa_concept_map: str = field(default="hungarian", metadata={"choices": ("hungarian", "majority")})
    fedlpa_min_concept: float = field(default=0.01, metadata=_range(0.0, 1.0))  # share of local samples; smaller modules are outliers

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Parse and validate; unknown keys, wrong types and bad values raise ConfigError."""
        fields = {_key(f): f for f in dataclasses.fields(cls)}
        unknown = sorted(set(run_config) - set(fields))
        if unknown:
            import difflib  # noqa: PLC0415

            hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, fields, 1)) else repr(k)
                     for k in unknown]
            raise ConfigError(f"unknown run-config key {', '.join(hints)}; valid keys: {', '.join(sorted(fields))}")
        values = {}
        for key, f in fields.items():
            if key in run_config:
                values[f.name] = _coerce(key, run_config[key], f.type)
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            key, value, meta = _key(f), getattr(self, f.name), f.metadata
            choices = meta.get("choices")
            if choices == "methods":
                from bouquet.registry import METHODS  # noqa: PLC0415 (registry imports config)

                choices = tuple(METHODS)
            if choices is not None and value not in choices:
                raise ConfigError(
                    f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}"
                )
            if "lo" in meta:
                _check_range(key, value, meta)
        from bouquet.registry import METHODS  # noqa: PLC0415

        if self.trim_fraction >= 0.5:
            raise ConfigError(f"trim-fraction={self.trim_fraction!r} is out of range; allowed: [0, 0.5)")
        self._validate_dp(METHODS)
        self._validate_gefl()
        self._validate_gcd()
        if self.keep_optimizer_state and not METHODS[self.method].optimizer_keepable:
            keepable = ", ".join(m for m, spec in METHODS.items() if spec.optimizer_keepable)
            raise ConfigError(f"keep-optimizer-state=true with method={self.method!r}: only {keepable} "
                              "keep their optimizer across rounds (fedpub always does)")
        if self.keep_optimizer_state and self.dp_mode != "none":
            raise ConfigError(f"keep-optimizer-state=true with dp={self.dp_mode!r}: state carried across rounds "
                              "is not in the privacy analysis; leave it false")
        if self.model != "auto" and not METHODS[self.method].takes_model_key:
            raise ConfigError(f"model={self.model!r} with method={self.method!r}: this method builds its own network; "
                              "leave model='auto'")
        if self.method == "fedpub" and self.aggregator != "mean":
            raise ConfigError(f"aggregator={self.aggregator!r} with method='fedpub': every client trains from its "
                              "personalized model, a similarity-weighted mean of all replies, which a robust rule "
                              "would not cover; use aggregator='mean' (max-update-norm bounds every update)")
        allowed = METHODS[self.method].datasets
        if self.dataset not in allowed:
            raise ConfigError(
                f"dataset={self.dataset!r} does not suit method={self.method!r}; choose one of: {', '.join(allowed)}"
            )

    @property
    def dp_mode(self) -> str:
        """The DP algorithm in force: the methods ``uls``/``els`` imply their own."""
        return self.method if self.method in ("uls", "els") else self.dp

    def _validate_dp(self, methods) -> None:
        """Settings whose combination would void the guarantee fail here, naming the key."""
        if self.method in ("uls", "els") and self.dp not in ("none", self.method):
            raise ConfigError(f"dp={self.dp!r} contradicts method={self.method!r} (which is dp={self.method!r})")
        if self.dp == "els" and self.method != "els":
            raise ConfigError("dp='els' is DP-SGD with example-level sampling, a method of its own: use method='els'")
        if self.dp_mode == "none":
            return
        if not methods[self.method].dp_ok:
            raise ConfigError(f"dp={self.dp_mode!r} does not apply to method={self.method!r}: "
                              f"{methods[self.method].dp_ok_reason}")
        if self.aggregator != "mean":
            raise ConfigError(f"aggregator={self.aggregator!r} with dp={self.dp_mode!r}: the privacy analysis is for "
                              "the clipped sum; use aggregator='mean'")
        if self.min_replies != 1:
            raise ConfigError(f"min-replies={self.min_replies} with dp={self.dp_mode!r}: skipping a round on a "
                              "data-dependent reply count is not private; leave min-replies at 1")
        if self.fraction_train != 1.0:
            raise ConfigError(f"fraction-train={self.fraction_train:g} with dp={self.dp_mode!r}: users (uls) or "
                              "examples (els) are Poisson-sampled at dp-sampling-rate; leave fraction-train at 1")

    def _validate_gefl(self) -> None:
        from bouquet.registry import HETERO_METHODS  # noqa: PLC0415

        if self.method in HETERO_METHODS and self.aggregator != "mean":
            raise ConfigError(f"aggregator={self.aggregator!r} with method={self.method!r}: a robust rule over the "
                              "whole bundle would mix architectures; heterogeneous models use aggregator='mean'")
        if self.gefl_augment != "none" and self.method not in HETERO_METHODS:
            raise ConfigError(f"gefl-augment={self.gefl_augment!r} with method={self.method!r}: only the heterogeneous "
                              f"methods ({', '.join(sorted(HETERO_METHODS))}) augment; leave it at 'none'")
        if self.gefl_share_first_block and self.method != "gefl":
            raise ConfigError(f"gefl-share-first-block=true with method={self.method!r}: only gefl has the switch "
                              "(gefl-f averages the first block over all clients in its warm-up and freezes it after; "
                              "lg-fedavg always averages it; for the baselines with it, use lg-fedavg)")
        before = {"gefl": self.gefl_gen_rounds, "gefl-f": self.gefl_fe_rounds + self.gefl_gen_rounds}.get(self.method, 0)
        if before and self.num_server_rounds <= before:
            raise ConfigError(
                f"num-server-rounds={self.num_server_rounds} leaves no target-training round for method={self.method!r}: "
                f"it first runs {before} round(s) (gefl-fe-rounds for gefl-f + gefl-gen-rounds); set num-server-rounds "
                f"to {before} + the target rounds (the paper: {before + 50}), or lower gefl-gen-rounds")

    def _validate_gcd(self) -> None:
        from bouquet.datasets import NUM_CLASSES  # noqa: PLC0415
        from bouquet.registry import GCD_METHODS  # noqa: PLC0415

        if self.method not in GCD_METHODS:
            return
        classes = NUM_CLASSES.get(self.dataset, 0)
        if classes and self.gcd_known_classes >= classes:
            raise ConfigError(f"gcd-known-classes={self.gcd_known_classes} leaves no novel class to discover: "
                              f"{self.dataset} has {classes} classes; use 1..{classes - 1}")
        if self.gcd_head_size and self.gcd_head_size <= self.gcd_known_classes:
            raise ConfigError(f"gcd-head-size={self.gcd_head_size} has no output for a novel class: use 0 (the true "
                              f"number of classes) or more than gcd-known-classes={self.gcd_known_classes}")
        if self.num_server_rounds <= self.gcd_ssl_rounds:
            raise ConfigError(f"num-server-rounds={self.num_server_rounds} leaves no GCD round for "
                              f"method={self.method!r} after gcd-ssl-rounds={self.gcd_ssl_rounds} warm-up rounds; "
                              "raise num-server-rounds or lower gcd-ssl-rounds")

    def check_federation(self, num_clients: int) -> None:
        """Settings that depend on the federation size, checked before round 1 (server and CLI):
        a run that could never update its model must not start."""
        if self.dp_mode != "none" and self.dp_delta and self.dp_delta >= 1.0 / num_clients:
            raise ConfigError(f"dp-delta={self.dp_delta:g} is at least 1/users = 1/{num_clients}: a mechanism that "
                              "publishes one user's data outright would meet it; use dp-delta < 1/users (0 = 1/users²)")
        sampled = max(int(num_clients * self.fraction_train), 1)  # Flower's FedAvg sampling
        if self.min_replies > sampled:
            raise ConfigError(
                f"min-replies={self.min_replies} is more than the {sampled} client(s) sampled per round "
                f"({num_clients} clients × fraction-train={self.fraction_train:g}): the model could never be updated")

    def to_run_config(self) -> dict[str, Any]:
        """The kebab-case mapping Flower would pass (for results files and subprocesses)."""
        return {_key(f): getattr(self, f.name) for f in dataclasses.fields(self)}


def _coerce(key: str, value: Any, type_name: str) -> Any:
    """Accept what TOML gives (an int where a float is expected), reject the rest."""
    if type_name == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if type_name == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if type_name == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if type_name == "bool" and isinstance(value, bool):
        return value
    if type_name == "str" and isinstance(value, str):
        return value
    raise ConfigError(f"{key}={value!r} must be of type {type_name}")


def _check_range(key: str, value: float, meta: Mapping[str, Any]) -> None:
    lo, hi, lo_open = meta["lo"], meta["hi"], meta["lo_open"]
    bad = not math.isfinite(value)
    bad |= lo is not None and (value <= lo if lo_open else value < lo)
    bad |= hi is not None and value > hi
    if bad:
        left = "(" if lo_open else "["
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf)" if hi is None else f"{hi:g}]"
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {left}{lo_s}, {hi_s}")


def data_spec(cfg: RunConfig, num_partitions: int):
    """The data-layer key for this run and federation size (clients and server share it)."""
    from bouquet.datasets import DataSpec  # noqa: PLC0415

    return DataSpec(
        dataset=cfg.dataset,
        partitioner=cfg.partitioner,
        num_partitions=num_partitions,
        alpha=cfg.dirichlet_alpha,
        classes_per_client=cfg.classes_per_client,
        seed=cfg.seed,
        data_dir=cfg.data_dir,
        unseen_fraction=cfg.graph_unseen_fraction,
        min_partition_size=cfg.min_partition_size,
        missing_classes=cfg.graph_missing_classes,
        missing_rule=cfg.graph_missing_rule,
        train_fraction=cfg.graph_train_fraction,
        examples_per_client=cfg.examples_per_client,
        self_balancing=cfg.dirichlet_self_balancing,
        local_test_split=cfg.local_test_split,
    )
