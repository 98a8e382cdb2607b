"""One metrics vocabulary for every method: each name says which model on which data.

``<model>@<data>`` is an accuracy in [0, 1]. Models: ``global_model`` (the aggregate the
server holds), ``local_model`` (a client's model after its own training). Data:
``local_test`` / ``local_val`` (a client's held-out splits; graphs: of its training graph),
``unseen_node`` (graph nodes that arrive after training, of seen classes),
``missing_class`` (arriving nodes of classes the client never saw labelled),
``global_test`` (the dataset's official test split, scored on the server),
``new_client`` (the Louvain held-out subgraph). ``num-examples@<data>`` counts the nodes or
samples behind a score, so aggregates are micro-averages over clients.

Forgetting and retention (FedKPer, after FedNTD), for every method without per-method code:
``<stat>:<model>@<data>`` with stat ``balanced`` (class-balanced accuracy), ``nfr`` (negative
flip rate: right before, wrong now) and ``pfr`` (positive flips); ``nfr:global_model@global_test``
compares consecutive global models (server), ``nfr:local_model@local_test`` a client's new
local model with the one it produced the last time it took part (client state), and ``bwt``
is backward transfer: the global model's accuracy on a client's local test now minus right
after the client last took part (a plain mean over previously sampled clients that did not
train this round); ``bwt-with-trained`` is the FedKPer code's definition, which also counts the
clients sampled again this round, against their reference from their previous participation
(their fresh training makes it less negative).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

GLOBAL_GLOBAL = "global_model@global_test"
GLOBAL_NEW_CLIENT = "global_model@new_client"
LOCAL_TEST, LOCAL_VAL, UNSEEN_NODE, MISSING_CLASS, NEW_CLIENT = (
    "local_test", "local_val", "unseen_node", "missing_class", "new_client")
TRAIN_LOSS = "train_loss"
BALANCED, NFR, PFR = "balanced", "nfr", "pfr"
BWT = "bwt"
BWT_WITH_TRAINED = "bwt-with-trained"  # FedKPer's code: this round's returning clients counted too
CORRECT = "correct@local_test"  # per-sample correctness (an array): client-side only, never sent
GLOBAL_NFR = f"{NFR}:{GLOBAL_GLOBAL}"
LOCAL_NFR = f"{NFR}:local_model@{LOCAL_TEST}"
GLOBAL_LOSS = "global_loss"  # cross-entropy of the global model (text: held-out users)
GLOBAL_PERPLEXITY = "global_perplexity"  # exp(loss), for the character model
# heterogeneous models: GeFL's reported number, the mean over architectures of each one's best
# global-test accuracy at the authors' checkpoint rounds (a max over the test set, labelled so)
BEST_CHECKPOINT = f"best-checkpoint:{GLOBAL_GLOBAL}"
GENERATED = "global_model@generated"  # GeFL: the nets' accuracy on generated samples of requested labels
UPDATE_NORM = "update_norm"  # ‖client arrays − global arrays‖₂, computed by the server
NUM_EXAMPLES = "num-examples"  # Flower's weighting key; the client's train (or test) size
PARTITION_ID = "partition-id"
MODEL_ARCH = "model-arch"  # heterogeneous models: the architecture id a client trained
# Generalized category discovery (FedLPA, SimGCD, GCD): ``hungarian:<model>@<data>[_old|_new]`` is the
# accuracy after one Hungarian matching of clusters to classes over all classes jointly (All), then
# restricted to the known (Old) or novel (New) classes' samples; ``unlabelled`` = a client's unlabelled
# training samples (transductive, as SimGCD). FedLPA's discovery rounds report each client's
# ``estimated_k`` (InfoMap concepts) beside ``true_k`` (its classes with enough samples to be found).
HUNGARIAN = "hungarian"
UNLABELLED = "unlabelled"
ESTIMATED_K, TRUE_K = "estimated_k", "true_k"

EPSILON = "dp-epsilon-spent"  # the privacy accountant's ε after each round (server)
GEFL_PHASE, GEFL_PHASE_ROUND = "gefl-phase", "gefl-phase-round"  # which GeFL phase a round was (server)

NOT_AVERAGED = frozenset({NUM_EXAMPLES, PARTITION_ID, MODEL_ARCH})
UNWEIGHTED = frozenset({BWT, BWT_WITH_TRAINED})  # averaged over clients, not over their samples
# What only the server computes; a client reply carrying one of these names is refused, so no
# participant can write (or overwrite) the server's ε, its test-set scores or its update norms.
SERVER_KEYS = frozenset({UPDATE_NORM, EPSILON, GLOBAL_LOSS, GLOBAL_PERPLEXITY, GEFL_PHASE, GEFL_PHASE_ROUND})
SERVER_DATA = ("global_test", NEW_CLIENT, "generated")  # sets only the server scores the *global* model on
KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:@+")
MAX_KEY_LEN = 100
MAX_ABS_VALUE = 1e12  # a finite metric beyond this (a loss of 1e308) would overflow the weighted means


def server_owned(key: str) -> bool:
    """True for a metric name only the server computes: its own counters, ``best-checkpoint:…``,
    and the global model (or one of GeFL's architectures) scored on the server's sets, with or
    without a ``<stat>:`` prefix or an ``_old`` / ``_new`` suffix."""
    if key in SERVER_KEYS or key.startswith("best-checkpoint:"):
        return True
    model, _, data = key.rsplit(":", 1)[-1].partition("@")
    server_model = model == "global_model" or (model.startswith("arch") and model[4:].isdigit())
    return server_model and data.startswith(SERVER_DATA)


def key_problem(key: str) -> str | None:
    """Why ``key`` is not an acceptable metric name (plain ASCII, at most MAX_KEY_LEN characters:
    names become CSV cells and plot labels), or None."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LEN or not set(key) <= KEY_CHARS:
        shown = repr(key)[:60]
        return f"metric name {shown} is not 1-{MAX_KEY_LEN} characters of [A-Za-z0-9_-.:@+]"
    return None


def name(model: str, data: str) -> str:
    return f"{model}@{data}"


def count_key(data: str) -> str:
    return f"{NUM_EXAMPLES}@{data}"


def is_accuracy(key: str) -> bool:
    return "@" in key and not key.startswith(NUM_EXAMPLES)


def stat(kind: str, key: str) -> str:
    """E.g. ``stat(NFR, "local_model@local_test")`` -> ``"nfr:local_model@local_test"``."""
    return f"{kind}:{key}"


def flip_rates(before: np.ndarray, now: np.ndarray) -> tuple[float, float]:
    """(negative, positive) flip rates between two correctness vectors of the same samples."""
    before, now = np.asarray(before, dtype=bool), np.asarray(now, dtype=bool)
    if before.shape != now.shape:
        raise ValueError(f"flip rates need vectors of one shape, got {before.shape} and {now.shape}")
    if before.size == 0:
        return float("nan"), float("nan")
    return float(np.mean(before & ~now)), float(np.mean(~before & now))


def balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean over the classes present in ``y`` of their recall."""
    pred, y = np.asarray(pred), np.asarray(y)
    classes = np.unique(y)
    if classes.size == 0:
        return float("nan")
    return float(np.mean([np.mean(pred[y == c] == c) for c in classes]))


def cluster_accuracy(y_true: np.ndarray, y_pred: np.ndarray, known: int) -> tuple[float, float, float]:
    """(All, Old, New) accuracy under one Hungarian assignment of predicted clusters to classes over
    all classes jointly (SimGCD's ``split_cluster_acc_v2``): classes ``< known`` are Old. A cluster
    left unmatched (more clusters than classes) counts as wrong; an empty part is NaN."""
    from scipy.optimize import linear_sum_assignment  # noqa: PLC0415

    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"cluster accuracy needs one prediction per label, got {y_pred.shape} and {y_true.shape}")
    if y_true.size == 0:
        return float("nan"), float("nan"), float("nan")
    d = int(max(y_pred.max(), y_true.max())) + 1
    w = np.zeros((d, d), dtype=np.int64)
    np.add.at(w, (y_pred, y_true), 1)
    rows, cols = linear_sum_assignment(w.max() - w)
    mapping = np.full(d, -1)
    mapping[rows] = cols
    hit = mapping[y_pred] == y_true
    old = y_true < known

    def mean(mask: np.ndarray) -> float:
        return float(hit[mask].mean()) if mask.any() else float("nan")

    return float(hit.mean()), mean(old), mean(~old)


def track_forgetting(step: str, server_round: int, metrics: dict, memory: dict[str, np.ndarray],
                     first_visit: str = "skip") -> tuple[dict, dict]:
    """A client's forgetting bookkeeping across rounds, the same for every method.

    ``train``: pops the local model's correctness vector (``CORRECT``) and, when the client
    took part before, adds its local flip rates against the model it produced then.
    ``evaluate``: the global model's ``global_model@local_test`` right after a round the
    client trained in becomes its reference; in later rounds it reports ``bwt`` against it.
    ``first_visit='zero'`` (FedKPer's code): a first participation's local flips are taken
    against an all-wrong model (NFR 0), instead of not being recorded.
    Returns (metrics to send, memory to keep); nothing per-sample leaves the client.
    """
    metrics, memory = dict(metrics), dict(memory)
    correct = metrics.pop(CORRECT, None)
    if step == "train":
        memory["trained_round"] = np.array([server_round])
        if correct is not None:
            before = memory.get("correct")
            if before is None and first_visit == "zero":
                before = np.zeros(np.shape(correct), dtype=bool)
            if before is not None and before.shape == np.shape(correct):
                nfr, pfr = flip_rates(before, correct)
                metrics[LOCAL_NFR], metrics[stat(PFR, name("local_model", LOCAL_TEST))] = nfr, pfr
            memory["correct"] = np.asarray(correct, dtype=bool)
        return metrics, memory
    acc = metrics.get(name("global_model", LOCAL_TEST))
    if acc is None or acc != acc:
        return metrics, memory
    trained = memory.get("trained_round")
    reference = memory.get("bwt_reference")
    if reference is not None:
        metrics[BWT_WITH_TRAINED] = float(acc - reference[0])
    if trained is not None and int(trained[0]) == server_round:
        memory["bwt_reference"] = np.array([acc])
    elif reference is not None:
        metrics[BWT] = float(acc - reference[0])
    return metrics, memory


def _weight(row: Mapping[str, float], key: str, weight_key: str) -> float:
    if key in UNWEIGHTED:
        return 1.0
    if is_accuracy(key):
        per_data = row.get(count_key(key.split("@", 1)[1]))
        if per_data is not None:
            return float(per_data)
    return float(row.get(weight_key, 1.0))


def weighted_mean(rows: Sequence[Mapping[str, float]], weight_key: str = NUM_EXAMPLES) -> dict[str, float]:
    """Per-key mean over clients; ids and counts are not averaged.

    An accuracy ``<model>@<data>`` is weighted by the client's ``num-examples@<data>`` when it
    reports one (a micro-average over nodes/samples), anything else by ``weight_key``. A key
    missing from some clients is averaged over those that report it.
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            if key in NOT_AVERAGED or key == weight_key or key.startswith(NUM_EXAMPLES) or value != value:
                continue
            w = _weight(row, key, weight_key)
            sums[key] = sums.get(key, 0.0) + w * float(value)
            weights[key] = weights.get(key, 0.0) + w
    return {k: sums[k] / weights[k] for k in sorted(sums) if weights[k] > 0}
