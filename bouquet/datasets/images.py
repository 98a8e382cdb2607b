"""Image dataset loaders: Fashion-MNIST, MNIST (test images only), CIFAR-10 JPEGs, BreastMNIST."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from bouquet.datasets.arrays import ArrayDataset, stratified_split
from bouquet.datasets.files import CHECKSUMS, dataset_files

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) as a uint8 array."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _to_float_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N,H,W) or (N,C,H,W) -> float32 (N,C,H,W) in [0,1]."""
    if images.ndim == 3:
        images = images[:, None]
    return images.astype(np.float32) / np.float32(255.0)


def _shared_float_images(images: np.ndarray, key: str) -> np.ndarray:
    """``_to_float_images``, memory-mapped read-only from a float32 copy in the decoded cache
    (keyed by the source's sha256): every process of a run (the server, each simulated client)
    then shares one copy through the page cache instead of holding a private one (Fashion-MNIST's
    training images: 188 MB a process; CIFAR-10's: 614 MB). Clients copy out only their partition."""
    path = decoded_cache_dir() / f"{key}-f32.npy"
    shape = (images.shape[0], 1, *images.shape[1:]) if images.ndim == 3 else tuple(images.shape)
    try:
        cached = np.load(path, mmap_mode="r")
        if cached.shape == shape and cached.dtype == np.float32:
            return cached
    except (OSError, ValueError):
        pass
    x = _to_float_images(images)
    try:
        _save_atomic(path, x)
        return np.load(path, mmap_mode="r")
    except OSError:
        return x  # an unwritable cache only costs memory


def load_fashion_mnist(root: Path) -> ArrayDataset:
    f = dataset_files("fashion-mnist", root)
    sha = CHECKSUMS["fashion-mnist"]["train-images-idx3-ubyte.gz"]
    return ArrayDataset(
        name="fashion-mnist",
        kind="image",
        x_train=_shared_float_images(read_idx(f["train-images-idx3-ubyte.gz"]), f"fashion-mnist-{sha[:16]}"),
        y_train=read_idx(f["train-labels-idx1-ubyte.gz"]).astype(np.int64),
        x_test=_to_float_images(read_idx(f["t10k-images-idx3-ubyte.gz"])),
        y_test=read_idx(f["t10k-labels-idx1-ubyte.gz"]).astype(np.int64),
        num_classes=10,
    )


def load_mnist(root: Path) -> ArrayDataset:
    """Only the 10k official test images ship offline: split them 80/20 (fixed seed 0)."""
    f = dataset_files("mnist", root)
    x = _to_float_images(read_idx(f["t10k-images-idx3-ubyte.gz"]))
    y = read_idx(f["t10k-labels-idx1-ubyte.gz"]).astype(np.int64)
    x_tr, y_tr, x_te, y_te = stratified_split(x, y)
    return ArrayDataset("mnist", "image", x_tr, y_tr, x_te, y_te, num_classes=10)


def load_breastmnist(root: Path) -> ArrayDataset:
    """MedMNIST's train+val become our train pool (clients split locally); test stays test."""
    f = dataset_files("breastmnist", root)
    with np.load(f["breastmnist.npz"]) as d:
        x_tr = np.concatenate([d["train_images"], d["val_images"]])
        y_tr = np.concatenate([d["train_labels"].reshape(-1), d["val_labels"].reshape(-1)])
        x_te, y_te = d["test_images"], d["test_labels"].reshape(-1)
    return ArrayDataset(
        "breastmnist", "image", _to_float_images(x_tr), y_tr.astype(np.int64),
        _to_float_images(x_te), y_te.astype(np.int64), num_classes=2,
    )


# --- CIFAR-10: JPEG decode is slow, so decoded uint8 arrays are cached on disk ----------


def decoded_cache_dir() -> Path:
    """$BOUQUET_CACHE if set, else ~/.cache/bouquet/decoded."""
    env = os.environ.get("BOUQUET_CACHE", "")
    return Path(env).expanduser() if env else Path("~/.cache/bouquet/decoded").expanduser()


def _decode_cifar_tar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode every `<split>/<class>/*.jpg` in the archive to uint8 (N,3,32,32) and labels."""
    from PIL import Image

    class_index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    images: list[np.ndarray] = []
    labels: list[int] = []
    with tarfile.open(path, "r|gz") as tar:
        for member in tar:
            if not (member.isfile() and member.name.endswith(".jpg")):
                continue
            cls = member.name.split("/")[-2]
            fh = tar.extractfile(member)
            assert fh is not None
            with Image.open(io.BytesIO(fh.read())) as img:
                images.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
            labels.append(class_index[cls])
    x = np.stack(images).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), np.asarray(labels, dtype=np.uint8)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """Write via a temp file + rename so concurrent readers never see a partial array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cached_cifar_split(path: Path, sha: str) -> tuple[np.ndarray, np.ndarray]:
    """Decoded arrays of one archive, keyed by its sha256 so a new archive re-decodes."""
    base = decoded_cache_dir() / f"cifar10-{sha[:16]}"
    x_path, y_path = base.with_name(base.name + "-x.npy"), base.with_name(base.name + "-y.npy")
    try:
        return np.load(x_path, mmap_mode="r"), np.load(y_path)
    except (OSError, ValueError):
        pass
    x, y = _decode_cifar_tar(path)
    try:
        _save_atomic(y_path, y)
        _save_atomic(x_path, x)
    except OSError:
        pass  # an unwritable cache only costs speed
    return x, y


def load_cifar10(root: Path) -> ArrayDataset:
    f = dataset_files("cifar10", root)
    sums = CHECKSUMS["cifar10"]
    x_tr, y_tr = _cached_cifar_split(f["cifar10_train_jpg.tar.gz"], sums["cifar10_train_jpg.tar.gz"])
    x_te, y_te = _cached_cifar_split(f["cifar10_test_jpg.tar.gz"], sums["cifar10_test_jpg.tar.gz"])
    return ArrayDataset(
        "cifar10", "image", _shared_float_images(x_tr, f"cifar10-{sums['cifar10_train_jpg.tar.gz'][:16]}"),
        y_tr.astype(np.int64),
        _to_float_images(x_te), y_te.astype(np.int64), num_classes=10,
    )
