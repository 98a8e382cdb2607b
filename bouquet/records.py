"""numpy dicts <-> Flower ArrayRecords, shape-exact (``np.ascontiguousarray`` turns a 0-d
array such as BatchNorm's ``num_batches_tracked`` into shape (1,), which the reply gate then
rightly rejects as a shape change)."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord


def contiguous(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v)
    return np.ascontiguousarray(v).reshape(v.shape)


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(contiguous(v)) for k, v in arrays.items()})
