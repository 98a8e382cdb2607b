"""Tabular dataset loaders: UCI Heart Disease (4 hospitals) and scikit-learn's bundled sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bouquet.datasets.arrays import ArrayDataset, standardize, stratified_split
from bouquet.datasets.files import dataset_files

HOSPITALS = ("cleveland", "hungarian", "switzerland", "va")


def load_heart_disease(root: Path) -> ArrayDataset:
    """All 920 patients as one train pool; groups = hospital (the natural FL split).

    Simplification (not FLamby's per-client pipeline): every `?` is imputed with the
    column median over all 920 rows, then each feature is standardized with the
    mean/std over all rows (std 0 -> 1). This uses pooled statistics, which a real
    cross-silo deployment could not compute; it keeps the benchmark simple and the
    same for every partitioner. Zeros that really mean "missing" (e.g. cholesterol in
    the Swiss file) are left as recorded. Label: num > 0 (any disease).
    There is no official test split (x_test is None).
    """
    import pandas as pd  # noqa: PLC0415  (only this loader needs it; keeps ClientApp start-up short)

    files = dataset_files("heart-disease", root)
    frames = []
    for hospital_id, hospital in enumerate(HOSPITALS):
        df = pd.read_csv(
            files[f"processed.{hospital}.data"], na_values="?", skipinitialspace=True
        )
        df["_group"] = hospital_id
        frames.append(df)
    data = pd.concat(frames, ignore_index=True)
    features = data.drop(columns=["num", "_group"]).astype(np.float64)
    features = features.fillna(features.median())
    (x,) = standardize(features.to_numpy())
    return ArrayDataset(
        name="heart-disease",
        kind="tabular",
        x_train=x,
        y_train=(data["num"].to_numpy() > 0).astype(np.int64),
        x_test=None,
        y_test=None,
        num_classes=2,
        groups=data["_group"].to_numpy().astype(np.int64),
        group_names=HOSPITALS,
    )


def _sklearn_dataset(name: str, x: np.ndarray, y: np.ndarray) -> ArrayDataset:
    """Fixed stratified 80/20 split (seed 0), standardized with train statistics."""
    x_tr, y_tr, x_te, y_te = stratified_split(x.astype(np.float64), y.astype(np.int64))
    x_tr, x_te = standardize(x_tr, x_te)
    return ArrayDataset(
        name, "tabular", x_tr, y_tr, x_te, y_te, num_classes=int(y.max()) + 1
    )


def load_breast_cancer(root: Path) -> ArrayDataset:
    """Wisconsin breast cancer, shipped inside scikit-learn (no data files needed)."""
    from sklearn.datasets import load_breast_cancer as sk_load

    d = sk_load()
    return _sklearn_dataset("breast_cancer", d.data, d.target)


def load_digits(root: Path) -> ArrayDataset:
    """8x8 digits as 64 tabular features, shipped inside scikit-learn."""
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    return _sklearn_dataset("digits", d.data, d.target)
