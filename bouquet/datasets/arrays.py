"""The in-memory form of every non-graph dataset, plus the split/scale helpers they share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Fixed seed for splits we must make ourselves: the split is part of the dataset,
# not of the experiment, so it must not move with the run seed.
SPLIT_SEED = 0


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Decoded arrays of one dataset.

    x is float32 (images N,C,H,W in [0,1]; tabular standardized) or int64 token
    windows for text; y is int64. x_test/y_test are None when there is no official
    test split. groups holds natural group ids (hospital, speaker) for the natural
    partitioner. eq=False keeps identity hashing: arrays are not comparable with ==.
    """

    name: str
    kind: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int
    groups: np.ndarray | None = None
    group_names: tuple[str, ...] | None = None
    vocab_size: int = 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def stratified_split(
    x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic stratified train/test split for datasets without an official one."""
    from sklearn.model_selection import train_test_split  # noqa: PLC0415  (1.5 s: not in every ClientApp process)

    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return x_tr, y_tr, x_te, y_te


def standardize(
    train: np.ndarray, *others: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Scale features with the train mean/std (std 0 -> 1) so no test statistics leak."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return tuple(((a - mean) / std).astype(np.float32) for a in (train, *others))
