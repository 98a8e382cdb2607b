"""``bouquet reproduce <preset>``: a paper's comparison as a sweep of Flower simulations.

Each (method, dataset, clients, seed) is one ``flwr run`` (through ``launch``, one warm
SuperLink for the whole sweep). Per run, the reported round is the one with the best
validation accuracy (latest on ties), and every setting's test accuracy is read at that
round. Results: ``results.csv`` (one row per run), ``table.md`` (the preset's headline table
first, labelled and with the reason it is the headline, then the other tables of the same
runs; mean ± std over seeds, the seed count per block or row; rows = methods, columns =
settings), ``<dataset>.png`` bar charts, ``<dataset>-rounds.png`` (every setting per round,
mean over seeds), and each run's own folder. ``export_run_configs`` writes each cell's run
config as a TOML file for ``flwr run <app> --run-config <file>``.
"""

from __future__ import annotations

import collections
import csv
import functools
import importlib
import json
import math
import re
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bouquet import metrics as M
from bouquet.simulations.launch import RayNode, SuperLink, launch


@dataclass(frozen=True)
class Preset:
    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    clients: tuple[int, ...]
    seeds: int | tuple[int, ...]  # a count (seeds 0..n-1) or the exact seeds
    settings: tuple[tuple[str, str], ...]  # (column title, metric)
    select_by: str | None  # None: no selection; accuracies are read over the final rounds
    run_config: dict[str, Any] = field(default_factory=dict)
    # per entry of ``methods``: extra run config; may set "method" to run a variant of one
    method_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    # per entry of ``datasets``: extra run config; may set "dataset" (a named scenario) and
    # "num-supernodes" (its federation size, instead of ``clients``)
    dataset_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    final_window: int = 1  # select_by None: accuracies are the mean over the last rounds
    round_mean: tuple[str, ...] = ()  # metrics reported as their mean over all rounds
    overrides: dict[str, Any] = field(default_factory=dict)  # from the command line: win over all
    # why the headline table (the first in table.md) is the one to read: one sentence
    headline: str = ""
    scale: float = 100.0  # table values are × scale (100: accuracies in %; 1: losses as they are)
    extra_report: str = ""  # "module:function(results, preset, out) -> markdown" appended to table.md

    @property
    def seed_values(self) -> tuple[int, ...]:
        return tuple(range(self.seeds)) if isinstance(self.seeds, int) else tuple(self.seeds)

    def clients_of(self, dataset: str) -> tuple[int, ...]:
        k = self.dataset_config.get(dataset, {}).get("num-supernodes")
        return self.clients if k is None else (int(k),)

    def config_of(self, dataset: str) -> dict[str, Any]:
        scenario = {k: v for k, v in self.dataset_config.get(dataset, {}).items() if k != "num-supernodes"}
        return {"dataset": dataset, **scenario}


MISSING = "local_model@missing_class"
MACRO_MISSING = "macro:" + MISSING  # mean over clients that hold missing-class nodes, not over nodes
FEDLOG_SETTINGS = (
    ("Seen Graph", "local_model@local_test"),
    ("Unseen Node", "local_model@unseen_node"),
    ("Missing Class", MISSING),
    ("New Client", "local_model@new_client"),
    ("Missing Class, macro", MACRO_MISSING),
)

PRESETS: dict[str, Preset] = {
    "fedlog": Preset(
        methods=("fedlog", "fedlog-paper", "fedpub", "fedavg", "fedprox", "local", "fedavg-adam", "fedprox-adam", "local-adam",
                 "fedavg-fedpub", "fedpub-paper"),
        datasets=("cora", "citeseer", "amazon-photo", "amazon-computers"),
        clients=(3, 5, 10),
        seeds=3,
        settings=FEDLOG_SETTINGS,
        select_by="local_model@local_val",
        run_config={"partitioner": "louvain", "num-server-rounds": 50, "batch-size": 64,
                    "fraction-evaluate": 0.0, "graph-unseen-fraction": 0.2, "graph-missing-classes": 1},
        headline=("This is the headline table because it is FedLoG's protocol (each run read at its round "
                  "with the best validation accuracy, latest on ties; mean ± std over seeds) with the validation "
                  "accuracies weighted by validation nodes, not by missing-class counts as the released code does "
                  "(a bug; its selection is table 2)."),
        # baselines: SGD as elsewhere in Bouquet; FedLoG: Adam 1e-3 and FED-PUB: Adam 0.01 (Cora), as their authors
        method_config={"fedprox": {"proximal-mu": 0.01},
                       "fedlog-paper": {"method": "fedlog", "fedlog-faithful-to": "paper"},
                       # FED-PUB with its l1 mask and proximal terms trained (the released code's give no gradient)
                       "fedpub-paper": {"method": "fedpub", "fedpub-faithful-to": "paper"},
                       # FedAvg as FED-PUB's public code trains it (models/fedavg, main.py's Cora setting): its GCN,
                       # Adam 0.01, wd 1e-6, one full-batch step an epoch, Adam's state kept across rounds
                       "fedavg-fedpub": {"method": "fedavg", "model": "gcn", "optimizer": "adam", "learning-rate": 0.01,
                                         "weight-decay": 1e-6, "batch-size": 1_000_000, "keep-optimizer-state": True},
                       # ablation: without the synthetic-norm term, which pulls never-seen classes' nodes to 0
                       "fedlog-nonorm": {"method": "fedlog", "fedlog-norm-weight": 0.0},
                       # the baselines again with FedLoG's optimizer (Adam 1e-3, wd 5e-4): a fairer match
                       **{f"{m}-adam": {"method": m, "optimizer": "adam", "learning-rate": 0.001, "weight-decay": 0.0005}
                          for m in ("fedavg", "fedprox", "local")}},
        # the protocol choices FedLoG's claim may depend on (not in the default sweep; name them in --datasets,
        # e.g. cora-r100): the authors' 100 rounds, which class goes missing, how many, how many labels
        dataset_config={f"{d}-{variant}": {"dataset": d, **extra} for d in ("cora", "citeseer")
                        for variant, extra in (("r100", {"num-server-rounds": 100}),
                                               ("notlargest", {"graph-missing-rule": "not-largest"}),
                                               ("missing2", {"graph-missing-classes": 2}),
                                               ("train20", {"graph-train-fraction": 0.2}))},
    ),
}
FEDKPER_SETTINGS = (
    ("Global acc", M.GLOBAL_GLOBAL),
    ("Personal acc", M.name("local_model", M.LOCAL_TEST)),
    ("Personal bal. acc", M.stat(M.BALANCED, M.name("local_model", M.LOCAL_TEST))),
    ("Global NFR", M.GLOBAL_NFR),
    ("Local NFR", M.LOCAL_NFR),
    ("BWT", M.BWT),
    ("BWT (code)", M.BWT_WITH_TRAINED),
)
# FedKPer's recipe (config/fedkper.json) for every method: SGD 0.01, momentum 0.9, wd 1e-5,
# lr ×0.99 per round, 5 local epochs, batch 12; every client evaluates the global model each
# round (backward transfer needs it).
PRESETS["fedkper"] = Preset(
    methods=("fedkper", "fedavg", "fedprox", "fedntd", "ditto", "local"),
    datasets=("heart-disease", "breastmnist-a0.1", "breastmnist-a0.5", "cifar10-a0.1"),
    clients=(10,),
    seeds=3,
    settings=FEDKPER_SETTINGS,
    select_by=None,
    final_window=5,
    round_mean=(M.GLOBAL_NFR, M.LOCAL_NFR, M.BWT, M.BWT_WITH_TRAINED),
    # FedKPer's protocol (its code): equal-count-per-class local test split, self-balancing Dirichlet,
    # first flip rates against an all-wrong model
    run_config={"learning-rate": 0.01, "optimizer": "sgd", "weight-decay": 1e-5, "lr-decay": 0.99,
                "local-epochs": 5, "batch-size": 12, "fraction-evaluate": 1.0, "min-partition-size": 10,
                "local-test-split": "per-class", "dirichlet-self-balancing": True, "forgetting-first-visit": "zero"},
    method_config={"fedprox": {"proximal-mu": 0.01}},
    headline=("This is the headline table, and the only one of this preset: FedKPer's official code has no "
              "validation split to select a round by and logs every round, so accuracies are the mean over the "
              "last 5 rounds and flip rates and BWT the mean over all rounds."),
    dataset_config={
        # the 4 hospitals; half of them per round, so returning clients exist (local NFR, BWT)
        "heart-disease": {"partitioner": "natural", "num-supernodes": 4, "fraction-train": 0.5,
                          "num-server-rounds": 50},
        "breastmnist-a0.1": {"dataset": "breastmnist", "model": "fedavg-cnn", "partitioner": "dirichlet", "dirichlet-alpha": 0.1,
                             "num-supernodes": 10, "fraction-train": 0.5, "num-server-rounds": 50},
        "breastmnist-a0.5": {"dataset": "breastmnist", "model": "fedavg-cnn", "partitioner": "dirichlet", "dirichlet-alpha": 0.5,
                             "num-supernodes": 10, "fraction-train": 0.5, "num-server-rounds": 50},
        # the official code's README setting, rounds scaled down for 2 CPU cores
        "cifar10-a0.1": {"dataset": "cifar10", "model": "fedavg-cnn", "partitioner": "dirichlet", "dirichlet-alpha": 0.1,
                         "num-supernodes": 20, "fraction-train": 0.1, "num-server-rounds": 20},
    },
)
# Chua et al. (arXiv 2407.07737) on Tiny Shakespeare: speaker = user, held-out users score the model.
# Equal compute: 320 examples a round in expectation for both. ULS: k = 32, q = 320 / Σ min(n, 32) =
# 320 / 2944 (every one of the 92 users has >= 51 training windows, so ~10 users of 32); one local
# SGD step on the user's 32 windows, its update clipped to lr·C. ELS: k = median = 182 training windows,
# q = 320 / Σ min(n, 182) = 320 / 13324; per-window gradients clipped to C = 1, server step lr.
USERDP_EPSILONS = (1, 4, 16)
_ULS = {"method": "uls", "dp-k": 32, "dp-sampling-rate": 320 / 2944, "batch-size": 32, "dp-clip": 2.0}
_ELS = {"method": "els", "dp-k": 182, "dp-sampling-rate": 320 / 13324, "dp-clip": 1.0}
PRESETS["userdp"] = Preset(
    methods=tuple(f"{a}-eps{e}" for a in ("uls", "els") for e in USERDP_EPSILONS) + ("uls-nonprivate", "els-nonprivate"),
    datasets=("shakespeare-92",),
    clients=(92,),
    seeds=3,
    settings=(("Held-out loss", M.GLOBAL_LOSS), ("Perplexity", M.GLOBAL_PERPLEXITY), ("Accuracy", M.GLOBAL_GLOBAL),
              ("ε spent", "dp-epsilon-spent")),
    select_by=None,
    scale=1.0,
    run_config={"learning-rate": 2.0, "num-server-rounds": 60, "fraction-evaluate": 0.0, "local-epochs": 1,
                "model": "char-lstm-small"},
    dataset_config={"shakespeare-92": {"dataset": "tinyshakespeare", "partitioner": "natural", "num-supernodes": 92}},
    method_config={**{f"{a}-eps{e}": {**cfg, "dp-epsilon": float(e)} for a, cfg in (("uls", _ULS), ("els", _ELS))
                      for e in USERDP_EPSILONS},
                   # the same sampling, bound and clipping without noise: what the privacy costs
                   "uls-nonprivate": {**_ULS, "dp-noise-multiplier": 0.0},
                   "els-nonprivate": {**_ELS, "dp-noise-multiplier": 0.0}},
    headline=("This is the headline table, and the only one of this preset: the final global model's loss on held-out users (speakers no client "
              "holds) after the same number of rounds and the same expected examples per round for ELS and ULS; "
              "delta = 1/users^2."),
    extra_report="bouquet.simulations.userdp:report",
)
# GeFL (Kang et al., arXiv 2412.18460): 10 architectures, IID shards of the paper's sizes (data-fraction
# keeps 600 images per client with 10 clients, 120 with 50, 60 with 100; CIFAR-10 2500 of 4000), SGD lr 0.1, 5 local epochs, the best-checkpoint number AND the last round.
# Scaled for 2 cores: generators at 1/8 width (gefl-gen-width 8), T_KA = 30 generator rounds instead of
# 100, T_TN = 30 target rounds instead of the code's 50; GeFL-F: T_FE = 10 warm-up rounds instead of 20.
GEFL_ROUNDS = {"fe": 10, "gen": 30, "target": 30}


def gefl_methods(fe: int, gen: int, target: int) -> dict[str, dict[str, Any]]:
    """Each GeFL variant's run config for the given phase lengths; baselines get ``target`` rounds.
    The ``-sharefe`` variants are not in the preset's default sweep: name them in ``--methods``."""
    base = {"num-server-rounds": target}
    out: dict[str, dict[str, Any]] = {m: dict(base) for m in ("hetero-fedavg", "hetero-fedprox", "lg-fedavg", "avgkd",
                                                               "hetero-local")}
    out["hetero-fedprox-released"] = {**base, "method": "hetero-fedprox", "gefl-released": True}
    for g in ("cvae", "dcgan"):
        image = {"method": "gefl", "gefl-generator": g, "gefl-gen-rounds": gen, "num-server-rounds": gen + target}
        out[f"gefl-{g}"] = image
        out[f"gefl-{g}-released"] = {**image, "gefl-released": True}
        # the released code's default avg_FE=1: the first block averaged over all clients in target rounds
        out[f"gefl-{g}-sharefe"] = {**image, "gefl-share-first-block": True}
        out[f"gefl-f-{g}"] = {"method": "gefl-f", "gefl-generator": g, "gefl-gen-rounds": gen, "gefl-fe-rounds": fe,
                              "num-server-rounds": fe + gen + target}
    return out


# Fashion-MNIST: 60k training images, 0.8 of a shard trains, 0.125 of that = 600 per client of 10. Bouquet's MNIST
# is the official 10k test set split 8000 / 2000 (the training images are not in ../shared/data): 800 per shard,
# 640 train, 0.9375 of that = 600 per client of 10 (120 of 50, 60 of 100); its test set is 2,000 images.
_GEFL_DATA = {f"{short}-{k}": {"dataset": name, "partitioner": "iid", "num-supernodes": k, "data-fraction": frac}
              for short, name, frac in (("fmnist", "fashion-mnist", 0.125), ("mnist", "mnist", 0.9375))
              for k in (10, 50, 100)}
# CIFAR-10 as the code trains it: RandomCrop(32, 4) + HFlip on the real batches; "-noaug" without (our first run)
_GEFL_DATA["cifar10-10-noaug"] = {"dataset": "cifar10", "partitioner": "iid", "num-supernodes": 10,
                                  "data-fraction": 0.625, "batch-size": 128}
_GEFL_DATA["cifar10-10"] = {**_GEFL_DATA["cifar10-10-noaug"], "gefl-augment": "crop-flip"}
PRESETS["gefl"] = Preset(
    methods=("hetero-fedavg", "hetero-fedprox", "hetero-fedprox-released", "lg-fedavg", "avgkd", "hetero-local",
             "gefl-cvae", "gefl-dcgan", "gefl-cvae-released", "gefl-dcgan-released", "gefl-f-cvae", "gefl-f-dcgan"),
    datasets=("fmnist-10", "mnist-10", "fmnist-50", "fmnist-100", "mnist-50", "mnist-100", "cifar10-10"),
    clients=(10,),
    seeds=3,
    settings=(("Paper: best checkpoint", M.BEST_CHECKPOINT), ("Last round", M.GLOBAL_GLOBAL)),
    select_by=None,
    run_config={"learning-rate": 0.1, "local-epochs": 5, "batch-size": 64, "fraction-evaluate": 0.0,
                "proximal-mu": 0.01, "gefl-gen-epochs": 5, "gefl-gen-width": 8},
    method_config=gefl_methods(**GEFL_ROUNDS),
    dataset_config=_GEFL_DATA,
    headline=("This is the headline table: the paper's own number (per architecture the best global-test accuracy "
              "at target rounds 1, 10, 20, ... and the last, then the mean over the 10 architectures) beside the "
              "last round's mean, which selects nothing on the test set."),
    extra_report="bouquet.simulations.gefl:report",
)
# FedLPA (NeurIPS 2025) and its baselines: generalized category discovery, 5 known / 5 novel classes, half of
# the known-class images labelled, 5 clients, Dirichlet 0.2 / 0.5 over all classes. No pretrained weights:
# every method first runs gcd-ssl-rounds federated SimCLR rounds (the same model for one seed), then its own
# GCD training; scaled for 2 cores (a quarter of each client's images, 30 GCD rounds, the 32-wide CNN).
GCD_SETTINGS = tuple((f"{title} ({where})", M.stat(M.HUNGARIAN, M.name("global_model", data + part)))
                     for where, data in (("test", "global_test"), ("unlabelled", M.UNLABELLED))
                     for title, part in (("All", ""), ("Old", "_old"), ("New", "_new")))
_GCD_DATA = {f"{short}-a{a}": {"dataset": name, "partitioner": "dirichlet", "dirichlet-alpha": a, "num-supernodes": 5}
             for short, name in (("cifar10", "cifar10"), ("fmnist", "fashion-mnist")) for a in (0.2, 0.5)}
# SimGCD's CIFAR-10 script (scripts/run_cifar10.sh) sets --memax_weight 1 (train.py's default, 2, is for
# CUB); FedLPA's alignment keeps the same weight. Fashion-MNIST has no authors' setting: train.py's 2.
for _a in (0.2, 0.5):
    _GCD_DATA[f"cifar10-a{_a}"].update({"gcd-memax-weight": 1.0, "fedlpa-weight": 1.0})
# --quick: Fashion-MNIST α 0.2, a tenth of the images, the 16-wide CNN, 4 SSL + 8 GCD rounds (4 minutes)
_GCD_DATA["fmnist-a0.2-quick"] = {**_GCD_DATA["fmnist-a0.2"], "data-fraction": 0.1, "gcd-width": 16,
                                  "gcd-ssl-rounds": 4, "num-server-rounds": 12, "fedlpa-warmup-rounds": 2,
                                  "fedlpa-every": 3}
PRESETS["fedlpa"] = Preset(
    methods=("fedlpa", "fedlpa-prior-mean", "simgcd", "gcd", "local-simgcd"),
    datasets=("cifar10-a0.2", "cifar10-a0.5", "fmnist-a0.2", "fmnist-a0.5"),
    clients=(5,),
    seeds=3,
    settings=GCD_SETTINGS,
    select_by=None,
    run_config={"learning-rate": 0.05, "batch-size": 128, "local-epochs": 1, "data-fraction": 0.25, "gcd-width": 32,
                "gcd-ssl-rounds": 10, "num-server-rounds": 40, "fedlpa-warmup-rounds": 10, "fedlpa-every": 5,
                "fraction-evaluate": 1.0},
    dataset_config=_GCD_DATA,
    # the other KL direction, KL(pi || p-bar): mass-covering, it does not push outputs a client lacks to 0
    method_config={"fedlpa-prior-mean": {"method": "fedlpa", "fedlpa-kl": "prior-mean"}},
    headline=("This is the headline table: the global model's final-round All / Old / New accuracy (one Hungarian "
              "matching over all classes) on the global test set and on the clients' unlabelled data, as SimGCD "
              "and FedLPA report them; local-simgcd has no global model (its own table follows)."),
    extra_report="bouquet.simulations.fedlpa:report",
)
QUICK = {"fedlog": {"datasets": ("cora",), "clients": (3,), "seeds": 1, "rounds": 20,
                   "methods": ("fedlog", "fedpub", "fedavg", "fedprox", "local")},  # about 3 minutes
         "fedkper": {"datasets": ("heart-disease",), "clients": (4,), "seeds": 1, "rounds": 30,
                     "methods": PRESETS["fedkper"].methods},
         "userdp": {"datasets": ("shakespeare-92",), "clients": (92,), "seeds": 1, "rounds": 10,  # about 4 minutes
                    "methods": ("uls-eps1", "uls-eps16", "els-eps1", "els-eps16", "uls-nonprivate", "els-nonprivate")},
         # phase lengths per method (no single round override): 2 warm-up, 5 generator, 5 target rounds
         "gefl": {"datasets": ("fmnist-10",), "clients": (10,), "seeds": 1, "rounds": None,  # about 4.5 minutes
                  "methods": ("hetero-fedavg", "gefl-cvae", "gefl-f-cvae"),
                  "method_config": gefl_methods(fe=2, gen=5, target=5)},
         # Fashion-MNIST α 0.2 at quick scale (its own dataset entry), the four methods
         "fedlpa": {"datasets": ("fmnist-a0.2-quick",), "clients": (5,), "seeds": 1, "rounds": None,
                    "methods": ("fedlpa", "simgcd", "gcd", "local-simgcd")}}


def select_round(server_rows: dict[int, dict[str, float]], select_by: str) -> int:
    """The round with the best ``select_by`` (latest wins ties, as the FedLoG code's ``<=``)."""
    best, best_round = -math.inf, max(server_rows)
    for rnd in sorted(server_rows):
        value = server_rows[rnd].get(select_by, math.nan)
        if value == value and value >= best:
            best, best_round = value, rnd
    return best_round


def read_rows(metrics_csv: Path) -> tuple[dict[int, dict[str, float]], dict[int, dict[int, dict[str, float]]]]:
    """(server rows by round, client rows by round and partition id) of one run."""
    server: dict[int, dict[str, float]] = defaultdict(dict)
    clients: dict[int, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            rnd, value = int(row["round"]), float(row["value"])
            if row["partition_id"] == "":
                server[rnd][row["metric"]] = value
            else:
                clients[rnd][int(row["partition_id"])][row["metric"]] = value
    return dict(server), {r: dict(c) for r, c in clients.items()}


def code_weighted_validation(clients: dict[int, dict[int, dict[str, float]]], metric: str) -> dict[int, dict[str, float]]:
    """The FedLoG code's selection score: client validation accuracies averaged with weights
    = each client's number of *missing-class* nodes (a bug; the paper means validation nodes)."""
    out = {}
    for rnd, by_client in clients.items():
        pairs = [(c[metric], c.get("num-examples@missing_class", 0.0)) for c in by_client.values() if metric in c]
        total = sum(w for _, w in pairs)
        if total > 0:
            out[rnd] = {metric: sum(v * w for v, w in pairs) / total}
    return out


def add_macro_missing(server: dict[int, dict[str, float]], clients: dict[int, dict[int, dict[str, float]]]) -> None:
    """Missing Class as the mean of the clients' own accuracies (each client with missing-class
    nodes counts once). The server's figure is micro (over nodes), so one client that holds most
    of the missing nodes decides it."""
    for rnd, by_client in clients.items():
        values = [c[MISSING] for c in by_client.values()
                  if MISSING in c and c.get("num-examples@missing_class", 0.0) > 0 and c[MISSING] == c[MISSING]]
        if values and rnd in server:
            server[rnd][MACRO_MISSING] = statistics.fmean(values)


def summarize_run(run_dir: Path, preset: Preset) -> dict[str, Any]:
    """Settings at the round chosen by validation (correct weighting); as ``last:`` columns at
    the final round; as ``code:`` columns at the round the FedLoG code's weighting would choose."""
    server, clients = read_rows(run_dir / "metrics.csv")
    add_macro_missing(server, clients)
    if preset.select_by is None:
        return summarize_final(server, preset)
    rnd = select_round(server, preset.select_by)
    row: dict[str, Any] = {"round": rnd, preset.select_by: server[rnd].get(preset.select_by)}
    row |= {metric: server[rnd].get(metric) for _, metric in preset.settings}
    last = max(server)
    row |= {"last:round": last} | {f"last:{m}": server[last].get(m) for _, m in preset.settings}
    code_scores = code_weighted_validation(clients, preset.select_by)
    if code_scores:
        code_rnd = select_round(code_scores, preset.select_by)
        row |= {"code:round": code_rnd} | {f"code:{m}": server[code_rnd].get(m) for _, m in preset.settings}
    return row


def commit_of(summary: dict[str, Any]) -> dict[str, str]:
    """{"commit": the short commit that computed the run (its parsed summary.json), "+dirty" if its app
    files differed from it; "unrecorded" for a run made before summary.json said (``bouquet.provenance``)}."""
    code = summary.get("code") or {}
    commit = str(code.get("commit", "unrecorded"))
    if commit in ("unrecorded", "unknown"):
        return {"commit": commit}
    return {"commit": commit[:7] + ("+dirty" if code.get("dirty") else "")}


def summarize_final(server: dict[int, dict[str, float]], preset: Preset) -> dict[str, Any]:
    """No selection: each setting's mean over the last ``final_window`` rounds (``round_mean``
    metrics: over all rounds), skipping rounds where it is undefined."""
    rounds = sorted(r for r in server if r > 0)
    window = rounds[-preset.final_window:]
    row: dict[str, Any] = {"round": rounds[-1] if rounds else 0}
    for _, metric in preset.settings:
        values = [server[r][metric] for r in (rounds if metric in preset.round_mean else window)
                  if metric in server[r] and server[r][metric] == server[r][metric]]
        row[metric] = statistics.fmean(values) if values else None
    return row


def run_config_of(preset: Preset, dataset: str, method: str, seed: int) -> dict[str, Any]:
    """The run-config overrides of one run of the sweep (without its ``output-dir``)."""
    return {**preset.run_config, **preset.config_of(dataset), "method": method,
            **preset.method_config.get(method, {}), **preset.overrides, "seed": seed}


# how a run was executed, not what it computed: never compared between a run and a sweep's config
RUN_SPECIFIC = ("output-dir", "num-clients", "resume-from", "data-dir", "federation-size", "round-timeout")


# method-specific key families and the registry module that alone reads them (clients/ or strategies/):
# a run of another method is not compared on them (GeFL runs made while fedlpa-concept-map had another
# default computed the same numbers)
KEY_FAMILIES = {"fedlog-": "fedlog", "fedpub-": "fedpub", "gefl-": "gefl", "gcd-": "fedlpa", "fedlpa-": "fedlpa",
                "fedkper-": "fedkper", "fedntd-": "fedntd", "ditto-": "ditto"}


def _reads(method: str, key: str) -> bool:
    """Whether ``method`` can depend on ``key``: False only for another method's key family."""
    from bouquet.registry import METHODS  # noqa: PLC0415

    family = next((module for prefix, module in KEY_FAMILIES.items() if key.startswith(prefix)), None)
    if family is None or method not in METHODS:
        return True
    m = METHODS[method]
    return family in {path.rpartition(".")[2].partition(":")[0] for path in (m.client_path, m.strategy_path)}


@functools.cache
def _defaults() -> dict[str, Any]:
    from bouquet.config import RunConfig  # noqa: PLC0415

    return RunConfig.from_run_config({}).to_run_config()


def config_mismatch(intended: dict[str, Any], kept: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (kept, intended)} for each key whose value in a run's recorded config differs from
    the config the sweep would run now, defaults included (values normalised by ``RunConfig``),
    except ``RUN_SPECIFIC`` keys and other methods' key families (``KEY_FAMILIES``). A key the run
    did not record (it predates the key) counts as today's default, so a protocol change made
    through a new key is caught; a recorded key that no longer exists is ignored."""
    from bouquet.config import RunConfig  # noqa: PLC0415

    want = RunConfig.from_run_config({k: v for k, v in intended.items() if k not in RUN_SPECIFIC}).to_run_config()
    had = {**_defaults(), **{k: v for k, v in kept.items() if k in want}}
    try:  # normalised as today's code reads them (an int recorded for a float key)
        had = RunConfig.from_run_config({k: v for k, v in had.items() if k not in RUN_SPECIFIC}).to_run_config()
    except Exception:  # noqa: BLE001, S110 (a value today's code rejects simply differs)
        pass
    return {k: (had.get(k), want[k]) for k in want
            if k not in RUN_SPECIFIC and had.get(k) != want[k] and _reads(want["method"], k)}


def check_sweep(preset: Preset, out: Path) -> None:
    """Every cell's config, data and federation size, checked before the first run starts
    (``bouquet.preflight``): a typo in ``--run-config`` fails in seconds, not after hours."""
    from bouquet.preflight import PreflightError, check_run  # noqa: PLC0415

    for dataset in preset.datasets:
        for k in preset.clients_of(dataset):
            for method in preset.methods:
                try:
                    check_run({**run_config_of(preset, dataset, method, 0), "output-dir": str(out)}, k)
                except PreflightError as exc:
                    raise PreflightError(f"{method} on {dataset} with {k} clients: {exc}") from None


def federation(k: int, per_client: bool) -> tuple[int, dict[str, Any]]:
    """(SuperNodes, run-config additions) for a cell of ``k`` clients: logical clients on one
    SuperNode per parallel slot (``bouquet.multiplex``; the same numbers, less per-round
    polling), or one SuperNode per client when ``per_client`` or when k fits the slots."""
    from bouquet.preflight import slots  # noqa: PLC0415

    if per_client or k <= slots():
        return k, {}
    return slots(), {"num-clients": k}


def run_sweep(preset: Preset, out: Path, ray_address: str | None = None,
              supernode_per_client: bool = False, warm_ray: bool = True) -> list[dict[str, Any]]:
    """Every run of the sweep through one private SuperLink (started at the first run that is
    not kept from an earlier sweep, stopped at the end); a failed run is recorded, not fatal.
    ``ray_address``: the runs join that existing Ray cluster (``launch.SuperLink``). Otherwise,
    with ``warm_ray``, one private Ray head on this machine (``launch.RayNode``) is started with
    the SuperLink and serves every run, instead of a Ray started and stopped inside each run."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(d, k, m, s) for d in preset.datasets for k in preset.clients_of(d) for s in preset.seed_values
            for m in preset.methods]
    results, results_csv = [], out / "results.csv"
    # the folder's runs outside this sweep (a subset continued into it): results.csv keeps them while
    # the sweep writes it run by run, so an interrupted subset never leaves a shorter table behind
    others = scan(preset, out, skip={cell_name(m, d, k, s) for d, k, m, s in jobs})
    bar = tqdm(jobs, desc="reproduce", unit="run")
    runtime = SweepRuntime(ray_address, warm_ray)
    try:
        for dataset, k, method, seed in bar:
            bar.set_postfix_str(f"{method} {dataset} K={k} seed={seed}")
            run_out = out / "runs" / cell_name(method, dataset, k, seed)
            kept, differs = pick_run(run_out, run_config_of(preset, dataset, method, seed))
            if differs:  # e.g. a preset whose protocol changed: never mix it into the table
                tqdm.write(f"[reproduce] {method} {dataset} K={k} seed={seed}: the run in {run_out} was made with "
                           f"another config ({differs}); running it again")
            if kept is not None:  # the same command again continues an interrupted sweep
                meta = json.loads(kept.read_text())
                results.append({"method": method, "dataset": dataset, "clients": k, "seed": seed,
                                "status": "finished:completed", "seconds": meta.get("wall_seconds"),
                                "run": str(kept.parent.relative_to(out))}
                               | summarize_run(kept.parent, preset) | commit_of(meta))
                tqdm.write(f"[reproduce] {method} {dataset} K={k} seed={seed}: kept from {kept.parent}")
                write_csv(results + others, results_csv)
                continue
            supernodes, logical = federation(k, supernode_per_client or ray_address is not None)
            config = {**run_config_of(preset, dataset, method, seed), "output-dir": str(run_out), **logical}
            t0, before = time.monotonic(), set(run_out.glob("*/summary.json"))
            res = launch(config, num_supernodes=supernodes, echo=False, superlink=runtime.superlink())
            row: dict[str, Any] = {"method": method, "dataset": dataset, "clients": k, "seed": seed,
                                   "status": res.status, "seconds": round(time.monotonic() - t0, 1)}
            summaries = [p for p in completed_runs(run_out) if p not in before]  # this run's, not an older one
            if res.ok and summaries:
                row |= {"run": str(summaries[-1].parent.relative_to(out))} | summarize_run(summaries[-1].parent, preset)
                row |= commit_of(json.loads(summaries[-1].read_text()))
            else:
                if res.ok:  # Flower says completed, yet no completed summary.json: not a result
                    row["status"] = "no completed summary.json"
                row["reason"] = str(res.reason or "")[:300]
                tqdm.write(f"[reproduce] {method} {dataset} K={k} seed={seed}: {res.status}\n{res.output[-2000:]}\n"
                           f"[reproduce] {method} {dataset} K={k} seed={seed}: {row['status']}: {res.reason}")
            results.append(row)
            tqdm.write("[reproduce] " + json.dumps(row))
            write_csv(results + others, results_csv)
    finally:
        runtime.close(keep_logs=any(r["status"] != "finished:completed" for r in results))
    return results


class SweepRuntime:
    """A sweep's private SuperLink and, with ``warm_ray`` (and no ``ray_address``), its private
    Ray head: started for the first run that is not kept, both started again when the head has
    died (a lost head would otherwise fail every later run), both stopped at the end, the head
    also when the SuperLink's stop is interrupted."""

    def __init__(self, ray_address: str | None, warm_ray: bool) -> None:
        self.ray_address, self.warm_ray = ray_address, warm_ray
        self.link: SuperLink | None = None
        self.head: RayNode | None = None

    def superlink(self) -> SuperLink:
        if self.head is not None and not self.head.alive():
            tqdm.write("[reproduce] the sweep's Ray head has stopped; starting the SuperLink and a Ray head again")
            self.close(keep_logs=True)
        if self.link is None:
            if self.ray_address is None and self.warm_ray:  # this machine's slots, so `federation` holds
                from bouquet.preflight import usable_cpus  # noqa: PLC0415

                try:
                    self.head = RayNode(num_cpus=usable_cpus())
                    tqdm.write(f"[reproduce] one Ray head for the sweep at {self.head.start()} (--no-warm-ray: "
                               "a Ray inside each run)")
                except (RuntimeError, OSError) as exc:  # the runs still work, each with a Ray of its own
                    self.head = None
                    tqdm.write(f"[reproduce] no Ray head for the sweep ({str(exc)[-500:]}); each run starts its own Ray")
            self.link = SuperLink(say=tqdm.write, ray_address=self.ray_address or (self.head.address if self.head else None))
            self.link.start()
        return self.link

    def close(self, keep_logs: bool = False) -> None:
        link, head, self.link, self.head = self.link, self.head, None, None
        try:
            if link is not None:
                link.stop()
        finally:
            if head is not None:
                head.stop(keep_logs=keep_logs)
                if keep_logs:
                    tqdm.write(f"[reproduce] the Ray head's logs are kept in {head.temp_dir}")


_STAMP = re.compile(r"_(\d{8}-\d{6})_\d+$")  # server_app.run_name: ..._{YYYYmmdd-HHMMSS}_{run id}


def _started(summary: Path) -> tuple[str, str]:
    m = _STAMP.search(summary.parent.name)
    return (m.group(1) if m else "", summary.parent.name)


def completed_runs(cell: Path) -> list[Path]:
    """The summary.json files of a cell's runs that completed, oldest first by the start stamp in
    the run folder's name (not by the name: it starts with the partitioner). A run that ended
    failed (its summary says so, e.g. every reply rejected) is never kept or tabulated: the next
    sweep runs the cell again."""
    return [p for p in sorted(cell.glob("*/summary.json"), key=_started)
            if json.loads(p.read_text()).get("status", "completed") == "completed"]


def pick_run(cell: Path, intended: dict[str, Any]) -> tuple[Path | None, str]:
    """(the newest completed run of ``cell`` made with ``intended``'s config, or None; when none is,
    what differs in the newest completed run, "" if there is none)."""
    done = completed_runs(cell)
    newest = ""
    for path in reversed(done):
        try:
            differs = config_mismatch(intended, json.loads(path.read_text()).get("run_config", {}))
            reason = ", ".join(f"{key}={a!r} (this preset: {b!r})" for key, (a, b) in differs.items())
        except Exception as exc:  # noqa: BLE001 (e.g. a cell of another preset: its dataset is no scenario here)
            reason = f"not a cell of this preset ({type(exc).__name__}: {exc})"
        if not reason:
            return path, ""
        newest = newest or reason
    return None, newest


def cell_name(method: str, dataset: str, clients: int, seed: int) -> str:
    """A sweep cell's folder under ``runs/``: one (method, dataset, clients, seed)."""
    return f"{method}_{dataset}_k{clients}_s{seed}"


LEFT_OUT = "left out: made with another config"


def scan(preset: Preset, out: Path, skip: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """One result row per cell folder under ``out/runs`` (its newest completed run made with the
    config this preset, with the command line's overrides, runs for the cell; no re-running),
    except the cells named in ``skip``. A cell without one is not summarised: its row says
    ``LEFT_OUT`` and which keys differ, or that its runs failed, so a table never averages two
    protocols and names every run it does not hold."""
    results = []
    for cell in sorted(p for p in out.glob("runs/*") if p.is_dir()):
        if cell.name in skip or not any(cell.glob("*/summary.json")):
            continue
        variant, scenario, k, seed = cell.name.rsplit("_", 3)  # {method}_{dataset}_k{K}_s{seed}
        row = {"method": variant, "dataset": scenario, "clients": int(k[1:]), "seed": int(seed[1:])}
        kept, reason = pick_run(cell, run_config_of(preset, scenario, variant, row["seed"]))
        if kept is not None:
            meta = json.loads(kept.read_text())
            results.append(row | {"status": "finished:completed", "seconds": meta.get("wall_seconds"),
                                  "run": str(kept.parent.relative_to(out))} | summarize_run(kept.parent, preset) | commit_of(meta))
        elif reason:
            print(f"[reproduce] {cell.name}: {LEFT_OUT}: {reason}", flush=True)
            results.append(row | {"status": LEFT_OUT, "reason": reason})
        else:  # only failed runs: named, never summarised
            last = json.loads(max(cell.glob("*/summary.json"), key=_started).read_text())
            results.append(row | {"status": "finished:failed", "reason": str(last.get("failure", ""))[:300]})
    return results


def completed(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if str(r.get("status", "")).endswith("completed")]


def write_csv(results: list[dict[str, Any]], path: Path) -> None:
    keys = list(dict.fromkeys(k for r in results for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(results)


def mean_std(values: list[float], scale: float = 100.0) -> str:
    """Mean ± sample std (n − 1; × scale: 100 for %, then 1 decimal; else 3 significant digits); one value
    alone has no spread, so it is shown without "±"."""
    values = [v for v in values if v is not None and v == v]
    if not values:
        return "–"
    if any(math.isinf(v) for v in values):  # e.g. ε without noise: no mean or spread to show
        return "∞" if all(v == math.inf for v in values) else "mixed ∞"
    fmt = (lambda v: f"{scale * v:.1f}") if scale == 100.0 else (lambda v: f"{scale * v:.3g}")
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.fmean(values))} ± {fmt(statistics.stdev(values))}"


def seeds_label(n: int) -> str:
    return "1 seed, no spread" if n == 1 else f"{n} seeds"


def markdown_table(results: list[dict[str, Any]], preset: Preset, prefix: str = "") -> str:
    """One block per (dataset, clients): rows = methods, columns = settings, mean ± std (%).
    ``prefix="code:"`` reads the columns selected with the FedLoG code's validation weighting."""
    lines, results = [], completed(results)  # a failed or left-out run is no seed of the mean
    groups = sorted({(r["dataset"], r["clients"]) for r in results},
                    key=lambda g: (preset.datasets.index(g[0]) if g[0] in preset.datasets else 99, g[0], g[1]))
    for dataset, k in groups:
        rows = [r for r in results if r["dataset"] == dataset and r["clients"] == k]
        per_method = {m: len({r["seed"] for r in rows if r["method"] == m}) for m in preset.methods}
        counts = {n for n in per_method.values() if n}
        uneven = len(counts) > 1  # then each row says its own count
        # the seeds behind each row: one count for all, else how many seeds the block holds
        seeds = len({r["seed"] for r in rows}) if uneven or not counts else counts.pop()
        lines += [f"### {dataset}, {k} clients ({seeds_label(seeds)}{'; per method in brackets' if uneven else ''})", "",
                  "| method | " + " | ".join(t for t, _ in preset.settings) + " |",
                  "|---|" + "---|" * len(preset.settings)]
        for method in preset.methods:
            mine = [r for r in rows if r["method"] == method]
            if mine:
                cells = [mean_std([r.get(prefix + metric) for r in mine], preset.scale) for _, metric in preset.settings]
                label = f"{method} ({seeds_label(per_method[method])})" if uneven else method
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


VALUES_NOTE = ("Values: %, mean ± std (sample standard deviation, n − 1) over the seeds named in each block's "
               "title (per method in brackets where methods differ); with 1 seed the single run's value, no spread.")


def report(results: list[dict[str, Any]], preset: Preset, name: str = "") -> tuple[str, str]:
    """(the headline section, the whole ``table.md``): the headline table first, labelled and
    with the sentence saying why it is the headline; then the other tables of the same runs."""
    if preset.select_by is None:
        title = "no round selection"
    else:
        title = f"rounds selected by validation accuracy (`{preset.select_by}`)"
    others = [] if preset.select_by is None else [
        ("same runs, rounds selected with the FedLoG code's validation weighting (missing-class counts)",
         "Not the headline: the released FedLoG code's selection, to compare with the authors' procedure.", "code:"),
        ("same runs, final round (no selection)",
         "Not the headline: every run read at its last round.", "last:"),
    ]
    count = f" (table 1 of {len(others) + 1})" if others else ""
    note = VALUES_NOTE if preset.scale == 100.0 else VALUES_NOTE.replace("Values: %,", "Values:")
    headline = "\n".join([f"## Headline table{count}: {title}", "", preset.headline, note, "",
                           markdown_table(results, preset)])
    parts = [f"# bouquet reproduce {name}".rstrip(), "", headline]
    for i, (label, sentence, prefix) in enumerate(others, start=2):
        parts += [f"## Table {i} of {len(others) + 1}: {label}", "", sentence, "",
                  markdown_table(results, preset, prefix=prefix)]
    commits = collections.Counter(str(r["commit"]) for r in completed(results) if "commit" in r)
    if len(commits) > 1 or any(c in ("unrecorded", "unknown") or c.endswith("+dirty") for c in commits):
        parts += ["## Which code computed these runs", "",
                  "A kept run is not rerun when the code changes, only when its config does: these tables hold "
                  "runs of " + ", ".join(f"`{c}` ({n})" for c, n in sorted(commits.items())) + " (`results.csv`, "
                  "column `commit`, says which run is which; `unrecorded`: made before runs recorded it).", ""]
    if missing := [r for r in results if r not in completed(results)]:
        parts += ["## Runs not in these tables", "", "| method | dataset | clients | seed | why |", "|---|---|---|---|---|"]
        parts += [f"| {r['method']} | {r['dataset']} | {r['clients']} | {r['seed']} | {r['status']}"
                  f"{': ' + str(r['reason']) if r.get('reason') else ''} |" for r in missing]
        parts.append("")
    return headline, "\n".join(parts)


def plot(results: list[dict[str, Any]], preset: Preset, out: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    results = completed(results)
    for dataset in sorted({r["dataset"] for r in results}):
        ks = sorted({r["clients"] for r in results if r["dataset"] == dataset})
        fig, axes = plt.subplots(1, len(ks), figsize=(4.5 * len(ks), 3.6), squeeze=False)
        for ax, k in zip(axes[0], ks, strict=True):
            width = 0.8 / len(preset.methods)
            for i, method in enumerate(preset.methods):
                mine = [r for r in results if r["dataset"] == dataset and r["clients"] == k and r["method"] == method]
                means = [statistics.fmean([r[m] for r in mine if r.get(m) is not None] or [math.nan])
                         for _, m in preset.settings]
                ax.bar([j + i * width for j in range(len(preset.settings))], means, width, label=method)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(preset.settings))], [t for t, _ in preset.settings], fontsize=8, rotation=20, ha="right")
            if preset.select_by is not None:
                ax.set_ylim(0, 1)
            ax.axhline(0, color="black", lw=0.5)
            ax.set_title(f"{dataset}, {k} clients", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        axes[0][0].set_ylabel("accuracy (selected round)" if preset.select_by else "rate (final rounds / mean over rounds)")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{dataset}.png", dpi=110)
        plt.close(fig)


def _plotted_runs(results: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """The result rows whose run folder under ``out`` still has its ``metrics.csv``."""
    return [r for r in results if r.get("run") and (out / r["run"] / "metrics.csv").is_file()]


def round_curves(results: list[dict[str, Any]], out: Path) -> dict[tuple[str, str, int], dict[str, list[float]]]:
    """Per (dataset, clients, method): each server metric's per-round mean over the seeds' runs
    (rows with a ``run`` folder under ``out``); rounds where no run has the metric are NaN."""
    by_group: dict[tuple[str, str, int], list[dict[int, dict[str, float]]]] = defaultdict(list)
    for r in _plotted_runs(results, out):
        by_group[(r["dataset"], r["method"], r["clients"])].append(read_rows(out / r["run"] / "metrics.csv")[0])
    curves: dict[tuple[str, str, int], dict[str, list[float]]] = {}
    for group, runs in by_group.items():
        last = max(max(run) for run in runs)
        metrics = {m for run in runs for row in run.values() for m in row}
        curves[group] = {m: [statistics.fmean(vals) if (vals := [run[rnd][m] for run in runs
                                                                  if m in run.get(rnd, {}) and run[rnd][m] == run[rnd][m]])
                             else math.nan for rnd in range(last + 1)] for m in metrics}
    return curves


def plot_curves(results: list[dict[str, Any]], preset: Preset, out: Path) -> None:
    """``<dataset>-rounds.png``: each setting over rounds, one line per method (mean over seeds)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    curves, plotted = round_curves(results, out), _plotted_runs(results, out)
    for dataset, k in sorted({(d, k) for d, _, k in curves}):
        cols = min(3, len(preset.settings))
        rows = math.ceil(len(preset.settings) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
        for ax in axes.flat[len(preset.settings):]:
            ax.axis("off")
        for ax, (title, metric) in zip(axes.flat, preset.settings, strict=False):
            for method in preset.methods:
                series = curves.get((dataset, method, k), {}).get(metric)
                if series and any(v == v for v in series):
                    n = sum((r["dataset"], r["method"], r["clients"]) == (dataset, method, k) for r in plotted)
                    ax.plot(range(len(series)), series, label=f"{method} ({n} seed{'s' if n > 1 else ''})", lw=1.2)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("round", fontsize=8)
            ax.grid(alpha=0.3)
        fig.suptitle(f"{dataset}, {k} clients: each round's mean over seeds", fontsize=10)
        handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels(), strict=True)}
        if handles:  # one legend for every method, wherever its lines are
            axes[0][-1].legend(handles.values(), handles.keys(), fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{dataset}-rounds.png", dpi=110)
        plt.close(fig)


def build_preset(name: str, *, quick: bool = False, seeds: int | tuple[int, ...] | None = None,
                 datasets: tuple[str, ...] | None = None, methods: tuple[str, ...] | None = None,
                 clients: tuple[int, ...] | None = None, overrides: dict[str, Any] | None = None) -> Preset:
    """The preset as ``bouquet reproduce`` runs it: ``--quick`` and the command-line subsets applied."""
    preset = PRESETS[name]
    if quick:
        q = QUICK[name]
        preset = replace(preset, datasets=q["datasets"], clients=q["clients"], seeds=q["seeds"], methods=q["methods"],
                         overrides={} if q["rounds"] is None else {"num-server-rounds": q["rounds"]},
                         method_config=q.get("method_config", preset.method_config))
    if seeds is not None:
        preset = replace(preset, seeds=seeds)
    if datasets:
        preset = replace(preset, datasets=datasets)
    if methods:
        preset = replace(preset, methods=methods)
    if clients:
        preset = replace(preset, clients=clients)
    if overrides:
        preset = replace(preset, overrides={**preset.overrides, **overrides})
    return preset


def reproduce(name: str, *, quick: bool = False, seeds: int | tuple[int, ...] | None = None, out: Path | None = None,
              datasets: tuple[str, ...] | None = None, methods: tuple[str, ...] | None = None,
              clients: tuple[int, ...] | None = None, overrides: dict[str, Any] | None = None,
              rebuild_only: bool = False, ray_address: str | None = None, supernode_per_client: bool = False,
              warm_ray: bool = True) -> Path:
    preset = build_preset(name, quick=quick, seeds=seeds, datasets=datasets, methods=methods, clients=clients,
                          overrides=overrides)
    out = (out or Path("results") / f"reproduce-{name}{'-quick' if quick else ''}").resolve()
    # a subset run into a folder that holds earlier runs: results and table cover them all
    if not rebuild_only:
        check_sweep(preset, out)
    results = [] if rebuild_only else run_sweep(preset, out, ray_address=ray_address,
                                                 supernode_per_client=supernode_per_client, warm_ray=warm_ray)
    if rebuild_only and not (out / "runs").is_dir():
        from bouquet.preflight import PreflightError  # noqa: PLC0415

        raise PreflightError(f"--rebuild: {out} holds no runs/ folder (run the sweep into it first)")
    results += scan(preset, out, skip={cell_name(r["method"], r["dataset"], r["clients"], r["seed"]) for r in results})
    write_csv(results, out / "results.csv")
    preset = replace(preset, methods=tuple(dict.fromkeys(
        [m for m in preset.methods if any(r["method"] == m for r in results)] + [r["method"] for r in results])))
    headline, text = report(results, preset, name)
    if preset.extra_report:
        module, _, func = preset.extra_report.partition(":")
        text += "\n" + getattr(importlib.import_module(module), func)(results, preset, out)
    (out / "table.md").write_text(text)
    plot(results, preset, out)
    plot_curves(results, preset, out)
    print(headline)
    if preset.select_by is not None:
        print("[reproduce] table.md also holds the same runs selected with the FedLoG code's weighting, "
              "and at the final round")
    print(f"[reproduce] results in {out} (results.csv, table.md, *.png)")
    return out


def _toml_value(value: Any, quote: str = '"') -> str:
    """A TOML value that reads back as the same Python value (bool, int, float, str);
    ``quote="'"``: strings as TOML literal strings, for a double-quoted shell argument."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = repr(value)
        return text if isinstance(value, int) or any(c in text for c in ".en") else text + ".0"
    if quote == "'" and "'" not in str(value) and "\n" not in str(value):
        return f"'{value}'"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string


def export_run_configs(name: str, out: Path, *, quick: bool = False, seeds: int | tuple[int, ...] | None = None,
                       datasets: tuple[str, ...] | None = None, methods: tuple[str, ...] | None = None,
                       clients: tuple[int, ...] | None = None, overrides: dict[str, Any] | None = None) -> list[Path]:
    """One run-config TOML per (dataset setting, method, clients) cell of the preset, as the
    sweep would run it (same keys and values as ``run_config_of``, its first seed; without the
    per-run ``output-dir``), for ``flwr run <app> --run-config <file>``. A comment header holds
    the federation options and the exact commands. Every file is validated (``RunConfig``)."""
    from bouquet.config import RunConfig  # noqa: PLC0415

    preset = build_preset(name, quick=quick, seeds=seeds, datasets=datasets, methods=methods, clients=clients,
                          overrides=overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed_values = preset.seed_values
    seed = seed_values[0]
    try:  # inside the repository: paths relative to it, so the files can be committed
        shown_dir = "$BOUQUET/" + out.resolve().relative_to(Path(__file__).resolve().parents[2]).as_posix()
    except ValueError:
        shown_dir = str(out.resolve())
    written = []
    for dataset in preset.datasets:
        fixed_size = "num-supernodes" in preset.dataset_config.get(dataset, {})
        for k in preset.clients_of(dataset):
            for method in preset.methods:
                config = run_config_of(preset, dataset, method, seed)
                RunConfig.from_run_config(config)  # a bad preset fails here, not in `flwr run`
                cell = f"{method}_{dataset}_k{k}"
                federation = f"num-supernodes={k} client-resources-num-cpus=1 client-resources-num-gpus=0.0"
                sweep_cmd = (f"bouquet reproduce {name}{' --quick' if quick else ''} --datasets {dataset}"
                             f"{'' if fixed_size else f' --clients {k}'} --methods {method} --seeds {seed},")
                if overrides:
                    sweep_cmd += ' --run-config "' + " ".join(
                        f"{key}={_toml_value(v, quote=chr(39))}" for key, v in overrides.items()) + '"'
                header = [
                    f"# bouquet reproduce {name}{' --quick' if quick else ''}: one cell as a Flower run config",
                    f"# cell: method={method} dataset={dataset} clients={k} seed={seed} "
                    f"(the preset runs seed{'s' if len(seed_values) > 1 else ''} "
                    f"{', '.join(map(str, seed_values))}: change `seed` below for the others)",
                    "# Generated by bouquet.simulations.reproduce.export_run_configs "
                    f"(`bouquet reproduce {name}{' --quick' if quick else ''} --export-toml DIR`); do not edit by hand.",
                    "#",
                    "# Federation options (not run config; `--federation-config`):",
                    f"#   {federation}",
                    "#",
                    "# Run it with Flower's CLI (after scripts/setup.sh, venv active), from a neutral directory:",
                    "# the managed SuperLink puts its working directory on the clients' sys.path.",
                    "#   BOUQUET=/path/to/bouquet    # this repository",
                    '#   export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 BOUQUET_DATA="$BOUQUET/../shared/data"'
                    ' BOUQUET_OUTPUT="$PWD/results"',
                    '#   cd "$(mktemp -d)"',
                    f'#   flwr run "$BOUQUET" --stream --federation-config "{federation}" '
                    f'--run-config "{shown_dir}/{cell}.toml"',
                    "#   flwr ls    # the real status: --stream exits 0 even when a run fails",
                    "# output-dir is not set: results go to $BOUQUET_OUTPUT (else ~/bouquet-results).",
                    f"# The same run inside the sweep: {sweep_cmd}",
                    "",
                ]
                ordered = {"method": config.pop("method"), "dataset": config.pop("dataset"), **config}
                body = [f"{key} = {_toml_value(value)}" for key, value in ordered.items()]
                path = out / f"{cell}.toml"
                path.write_text("\n".join(header + body) + "\n")
                written.append(path)
    return written
