"""A Byzantine participant, for robustness experiments and attack tests in real runs.

``BOUQUET_ADVERSARY="<attack>[:<value>]@<partition ids>"`` in a ClientApp's environment makes
the train replies of those partitions malicious, the way a participant that controls its own
machine could; e.g. ``scale:1e6@0`` or ``num-examples:1e12@1,2``. It changes only replies
sent from the process where it is set (in a deployment: the attacker's own SuperNode; in
simulation every actor shares the launcher's environment, hence the partition list), so it
grants nothing to anyone. Unset, nothing changes.

Attacks: ``scale:F`` (arrays ×F), ``nan`` (the first array NaN), ``num-examples:N``, ``metric:KEY=V``
(set a metric; ``V=drop`` removes it), ``extra-arrays`` (a second ArrayRecord holding NaN),
``extra-key`` (an array the model does not have), ``metrics-first`` (a MetricRecord before
``metrics``, the one Flower would weight by), ``float64`` (arrays as float64 with a 1e300),
``complex64`` (arrays as complex64).
"""

from __future__ import annotations

import os

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from bouquet.records import to_record

ENV = "BOUQUET_ADVERSARY"


def parse(text: str) -> tuple[str, str, set[int]]:
    """``"scale:1e6@0,2"`` -> ("scale", "1e6", {0, 2})."""
    attack, _, targets = text.rpartition("@")
    name, _, value = attack.partition(":")
    return name, value, {int(p) for p in targets.split(",") if p.strip()}


def _arrays(content: RecordDict) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in content["arrays"].items()}


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return to_record(arrays)


def corrupt(content: RecordDict, partition_id: int, spec: str | None = None) -> RecordDict:
    """The reply the adversary sends instead of ``content`` (unchanged when not targeted)."""
    spec = os.environ.get(ENV, "") if spec is None else spec
    if not spec:
        return content
    name, value, targets = parse(spec)
    if partition_id not in targets:
        return content
    arrays = _arrays(content) if "arrays" in content else {}
    metrics = dict(content["metrics"])
    out = RecordDict()
    if name == "metrics-first":
        out["aaa-weights"] = MetricRecord({"num-examples": 1e12})
    if name == "scale":
        arrays = {k: v * float(value) for k, v in arrays.items()}
    elif name == "nan":
        arrays = {k: np.full_like(v, np.nan) if i == 0 else v for i, (k, v) in enumerate(arrays.items())}
    elif name == "num-examples":
        metrics["num-examples"] = float(value)
    elif name == "metric":
        key, _, v = value.partition("=")
        metrics.pop(key, None) if v == "drop" else metrics.__setitem__(key, float(v))
    elif name == "extra-key":
        arrays["smuggled"] = np.ones(3, dtype=np.float32)
    elif name == "float64":
        arrays = {k: v.astype(np.float64) for k, v in arrays.items()}
        first = next(iter(arrays))
        arrays[first].flat[0] = 1e300
    elif name == "complex64":
        arrays = {k: v.astype(np.complex64) for k, v in arrays.items()}
    elif name not in ("extra-arrays", "metrics-first"):
        raise ValueError(f"{ENV}: unknown attack {name!r}")
    out["metrics"] = MetricRecord(metrics)
    if "arrays" in content:
        out["arrays"] = _record(arrays)
    if name == "extra-arrays":
        out["shadow"] = _record({k: np.full_like(v, np.nan) for k, v in arrays.items()})
    for key, record in content.items():
        if key not in out and key not in ("arrays", "metrics"):
            out[key] = record
    return out
