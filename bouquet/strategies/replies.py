"""What a client reply may contain before anything in it is aggregated or recorded.

A participant is not trusted (README, "Threat model"). Flower's aggregation sums *every*
ArrayRecord of a reply and weights by the *first* MetricRecord, and a float64 or complex array
would silently change the model's dtype; so a reply must carry exactly the records its method
expects (names, keys, shapes, the global model's dtypes), finite values, and weights inside
bounds the server sets (a client cannot claim more examples than its partition holds, nor a
score outside the method's range). Anything else is rejected with a reason, never raised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from bouquet import metrics as M
from bouquet.records import contiguous

MAX_METRICS = 256  # a reply with more metric keys is refused (oversized)
MAX_EXACT_INT = 2**53  # integer arrays (BN batch counters) are averaged in float64
NPY_HEADER_MAX = 4096  # an .npy header is 128 bytes for our arrays; anything beyond the data is refused


@dataclass(frozen=True)
class ReplyRules:
    """What one reply of one partition may carry."""

    array_records: frozenset[str]  # exact ArrayRecord names ("arrays" + the method's extras)
    max_examples: float = math.inf  # the most examples the partition can hold (bounds num-examples)
    max_count: float = math.inf  # the most samples any scored set can hold (bounds num-examples@<global set>)
    weight_key: str = M.NUM_EXAMPLES  # the aggregation weight
    weight_range: tuple[float, float] = (0.0, math.inf)  # inclusive bounds of a non-size weight
    nan_weight_ok: bool = False  # NaN weight allowed (the method falls back, e.g. FedKPer)
    max_local_count: float = math.inf  # the partition's own size (bounds num-examples@<its own sets>)


def reply_problem(content: RecordDict, reference: ArrayRecord | None, rules: ReplyRules) -> str | None:
    """Why the reply must not be used, or None when it is sound (never raises)."""
    try:
        return _records_problem(content, rules) or _metrics_problem(content, rules) or _arrays_problem(
            content, reference)
    except Exception as exc:  # noqa: BLE001 (whatever a forged reply triggers is a rejection)
        return f"malformed reply ({type(exc).__name__}: {exc})"


def _records_problem(content: RecordDict, rules: ReplyRules) -> str | None:
    arrays, metrics, configs = set(content.array_records), set(content.metric_records), set(content.config_records)
    if arrays != set(rules.array_records):
        return f"ArrayRecords {sorted(arrays)}, expected exactly {sorted(rules.array_records)}"
    if metrics != {"metrics"}:
        return f"MetricRecords {sorted(metrics)}, expected exactly ['metrics']"
    if configs:
        return f"unexpected ConfigRecords {sorted(configs)}"
    return None


def _metrics_problem(content: RecordDict, rules: ReplyRules) -> str | None:
    metrics = content["metrics"]
    if len(metrics) > MAX_METRICS:
        return f"{len(metrics)} metrics, more than {MAX_METRICS}"
    for key, value in metrics.items():
        if (problem := M.key_problem(key)) is not None:
            return problem
        if M.server_owned(key):
            return f"metric {key!r} is computed by the server, not reported by clients"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"metric {key!r} is not a number ({type(value).__name__})"
        if value != value:
            if key.startswith(M.NUM_EXAMPLES):
                return f"'{key}' is NaN (a count must be a number)"
            continue  # NaN: "not defined this round", never recorded
        if not abs(value) <= M.MAX_ABS_VALUE:
            return f"metric {key!r}={value!r} is infinite or beyond ±{M.MAX_ABS_VALUE:g}"
        if M.is_accuracy(key) and not 0.0 <= value <= 1.0:
            return f"metric {key!r}={value!r} is outside [0, 1]"
        if key in M.UNWEIGHTED and not -1.0 <= value <= 1.0:  # backward transfers
            return f"metric {key!r}={value!r} is outside [-1, 1]"
        if key == M.NUM_EXAMPLES and not 0 <= value <= rules.max_examples:
            return f"'{key}'={value!r} is outside [0, {rules.max_examples:g}] (the partition's size)"
        if key.startswith(M.NUM_EXAMPLES + "@"):
            # a count of the client's own data is bounded by its partition, of a server-wide set by the dataset
            whole = key.split("@", 1)[1].startswith(M.SERVER_DATA)
            bound, what = (rules.max_count, "the dataset's size") if whole else (rules.max_local_count, "the partition's size")
            if not 0 <= value <= bound:
                return f"'{key}'={value!r} is outside [0, {bound:g}] ({what})"
    n = metrics.get(M.NUM_EXAMPLES)
    if n is None or not n > 0:
        return f"'{M.NUM_EXAMPLES}' must be a positive number, got {n!r}"
    if rules.weight_key != M.NUM_EXAMPLES:
        w, (lo, hi) = metrics.get(rules.weight_key), rules.weight_range
        if not isinstance(w, int | float) or isinstance(w, bool) or not (lo <= w <= hi or (w != w and rules.nan_weight_ok)):
            return f"weight '{rules.weight_key}'={w!r} is missing or outside [{lo:g}, {hi:g}]"
    return None


def _arrays_problem(content: RecordDict, reference: ArrayRecord | None) -> str | None:
    if reference is None:  # no global model (local training): nothing may be sent
        if "arrays" in content.array_records and len(content["arrays"]):
            return f"{len(content['arrays'])} arrays sent, but this method has no global model to send them to"
        return None
    arrays = content["arrays"]
    if list(arrays.keys()) != list(reference.keys()):
        missing = sorted(set(reference.keys()) - set(arrays.keys()))
        extra = sorted(set(arrays.keys()) - set(reference.keys()))
        return f"array keys differ from the global model (missing {missing}, extra {extra})"
    for key in reference.keys():
        got, want = arrays[key], reference[key]
        if (problem := array_problem(key, got, want)) is not None:
            return problem
    return None


def array_problem(key: str, got: Array, want: Array) -> str | None:
    """``got`` against the global model's ``want``: its header (shape, dtype) and, since Flower
    carries the header apart from the bytes and never compares them, the array the bytes decode
    to (its size checked before decoding), so what is aggregated is what was checked."""
    if tuple(got.shape) != tuple(want.shape):
        return f"'{key}' has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    if got.dtype != want.dtype:
        return f"'{key}' has dtype {got.dtype}, expected {want.dtype}"
    expected = int(np.prod(want.shape, dtype=np.int64)) * np.dtype(want.dtype).itemsize
    if got.stype != want.stype or len(got.data) > expected + NPY_HEADER_MAX:
        return f"'{key}' carries {len(got.data)} bytes of {got.stype!r}, more than a {want.dtype} {tuple(want.shape)} array"
    real = got.numpy()
    if real.shape != tuple(want.shape) or real.dtype != np.dtype(want.dtype):
        return f"'{key}' decodes to {real.dtype} {real.shape}, not the {got.dtype} {tuple(got.shape)} its header says"
    if not np.all(np.isfinite(real)):
        return f"'{key}' contains NaN or Inf"
    if np.issubdtype(real.dtype, np.integer) and real.size and not -MAX_EXACT_INT <= real.min() <= real.max() <= MAX_EXACT_INT:
        return f"'{key}' holds integers beyond 2**53, which the float64 mean cannot average exactly"
    return None


def clip_update(arrays: dict[str, np.ndarray], reference: dict[str, np.ndarray], bound: float
                ) -> tuple[dict[str, np.ndarray], float]:
    """Scale the update (arrays − reference) to L2 norm <= ``bound`` over all arrays together;
    returns (arrays, the update's norm before clipping)."""
    delta = {k: arrays[k].astype(np.float64) - reference[k].astype(np.float64) for k in reference}
    norm = math.sqrt(sum(float(np.sum(d * d)) for d in delta.values()))
    if bound <= 0 or norm <= bound:
        return arrays, norm
    scale = bound / norm
    return {k: (reference[k].astype(np.float64) + delta[k] * scale).astype(reference[k].dtype) for k in reference}, norm


def robust_mean(stacked: np.ndarray, aggregator: str, trim_fraction: float) -> np.ndarray:
    """Coordinate-wise median (Flower's ``FedMedian``) or trimmed mean (Flower's own
    ``trim_mean`` of ``FedTrimmedAvg``) over axis 0; unweighted, as Flower's are."""
    if aggregator == "median":
        return np.median(stacked, axis=0)
    from flwr.serverapp.strategy.fedtrimmedavg import trim_mean  # noqa: PLC0415

    return trim_mean(stacked, trim_fraction)


def robust_aggregate(records: list[ArrayRecord], aggregator: str, trim_fraction: float) -> ArrayRecord:
    """``robust_mean`` of each array over the replies, in the global model's dtype."""
    out = ArrayRecord()
    for key in records[0].keys():
        stacked = np.stack([r[key].numpy() for r in records])
        out[key] = Array(contiguous(robust_mean(stacked, aggregator, trim_fraction).astype(stacked.dtype)))
    return out
