"""Locate and verify the raw data files every loader reads.

Each dataset lives in ``<root>/<dataset>/`` exactly as its origin published it; the
sha256 of every file we read is pinned here (copied from the folder's SOURCE.md) so a
truncated or swapped file fails loudly instead of silently training on garbage.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHECKSUMS: dict[str, dict[str, str]] = {
    "cora": {
        "ind.cora.x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
        "ind.cora.tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
        "ind.cora.allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
        "ind.cora.y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
        "ind.cora.ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
        "ind.cora.ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
        "ind.cora.graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
        "ind.cora.test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
    },
    "citeseer": {
        "ind.citeseer.x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
        "ind.citeseer.tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
        "ind.citeseer.allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
        "ind.citeseer.y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
        "ind.citeseer.ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
        "ind.citeseer.ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
        "ind.citeseer.graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
        "ind.citeseer.test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
    },
    "amazon-photo": {
        "amazon-photo.zip": "9a1a31380c0480c87d4174f3e76e51956720da6e01ad5332b437e3dc99f11724",
    },
    "amazon-computers": {
        "amazon-computers.zip": "ef387b28234c0aae28f49a337d5ad4074ec31063ddd7650b8fd0ab986cecd155",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
    # Only the 10k test images exist; the train labels file is never read.
    "mnist": {
        "t10k-images-idx3-ubyte.gz": "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b",
        "t10k-labels-idx1-ubyte.gz": "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c",
    },
    "cifar10": {
        "cifar10_train_jpg.tar.gz": "45a63b9dd7542b37404b94f3e6f0269562f89fe2ff16ed505e6a327bb8c68449",
        "cifar10_test_jpg.tar.gz": "f225cabdd5279430dd56749e356119671fe0cd2bf543e78d20c27af441d80951",
    },
    # As stored, i.e. with the one header line the origin repo prepended.
    "heart-disease": {
        "processed.cleveland.data": "a597fa0641f4559d721092562729d0feb2541e536f9319895e8096c182c7657c",
        "processed.hungarian.data": "df272dfbbb07dc1f111a4513d8d3ede423c6376291f166951b04ee0a585f5d34",
        "processed.switzerland.data": "a8a346fba9f44620c9d0befab8f180f48bb8937e449e415c77f0873045b1e8ec",
        "processed.va.data": "203937eea74ac67b519c00194c712b74ee14cf2748d3550d4798c91cfb59ee31",
    },
    "breastmnist": {
        "breastmnist.npz": "5e68d79723fb3a63a399b0a66b66451799fc2eb3651f469cec0b679cfd743b68",
    },
    "tinyshakespeare": {
        "input.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    },
}

_DEFAULT_ROOT = Path("~/.cache/bouquet/data")
_verified: dict[tuple[str, int, int], str] = {}


class DataFileError(RuntimeError):
    """A data file is missing or does not match its pinned sha256."""


def data_root(override: str = "") -> Path:
    """Resolve the data root: explicit override, then $BOUQUET_DATA, then the user cache."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("BOUQUET_DATA", "")
    return Path(env).expanduser() if env else _DEFAULT_ROOT.expanduser()


def _sha256(path: Path) -> str:
    """Hash a file once per (path, size, mtime) so repeated loads cost a stat call."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _verified[key] = digest.hexdigest()
    return _verified[key]


def _how_to_fix(name: str, file: str) -> str:
    return (
        f"Put the dataset's folder `{name}/` there (see its SOURCE.md in the shared data), or set "
        f"BOUQUET_DATA (or the `data-dir` run-config key) to a folder holding `{name}/{file}`."
        + (" BOUQUET_DOWNLOAD=1 lets Bouquet fetch it from its public source." if name in DOWNLOADABLE else "")
    )


def dataset_files(name: str, root: str | Path) -> dict[str, Path]:
    """Return verified paths of every file ``name`` needs, downloading only where allowed."""
    if name not in CHECKSUMS:
        raise KeyError(f"no data files registered for dataset {name!r}")
    folder = Path(root).expanduser() / name
    expected = CHECKSUMS[name]
    if not any((folder / f).exists() for f in expected) and os.environ.get("BOUQUET_DOWNLOAD") == "1":
        _maybe_download(name, folder)
    missing = [f for f in expected if not (folder / f).is_file()]
    if len(missing) == len(expected):
        raise DataFileError(f"missing data folder {folder} (expected files: {', '.join(expected)}). "
                            f"{_how_to_fix(name, missing[0])}")
    if missing:
        raise DataFileError(
            f"missing data file(s) in {folder}: "
            + ", ".join(f"{f} (sha256 {expected[f]})" for f in missing)
            + f". {_how_to_fix(name, missing[0])}"
        )
    paths: dict[str, Path] = {}
    for file, sha in expected.items():
        path = folder / file
        actual = _sha256(path)
        if actual != sha:
            raise DataFileError(
                f"corrupt data file {path}: expected sha256 {sha} got {actual}. "
                f"{_how_to_fix(name, file)}"
            )
        paths[file] = path
    return paths


# --- opt-in download (BOUQUET_DOWNLOAD=1; graph datasets only; never used by tests) ------

_PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"
# The pinned zips, not PyG's npz URL, so the downloaded bytes match CHECKSUMS.
_AMAZON_URL = (
    "https://github.com/CrawlScript/gnn_datasets/raw/"
    "482d7152d60e429763ca256dd0906fa9badaae0c/AmazonElectronics"
)


DOWNLOADABLE = ("cora", "citeseer", "amazon-photo", "amazon-computers")


def _maybe_download(name: str, folder: Path) -> None:
    """Fetch a dataset whose files are all absent, via torch_geometric's downloader.

    Only the graph datasets have stable public URLs matching our checksums; for the
    others a missing file stays an error (raised by the caller).
    """
    if name in ("cora", "citeseer"):
        base = _PLANETOID_URL
    elif name in ("amazon-photo", "amazon-computers"):
        base = _AMAZON_URL
    else:
        return
    from torch_geometric.data import download_url

    try:
        for file in CHECKSUMS[name]:
            download_url(f"{base}/{file}", str(folder), log=False)
    except Exception as exc:  # network errors: report as a data problem
        raise DataFileError(
            f"could not download {name} into {folder}: {exc}. {_how_to_fix(name, '...')}"
        ) from exc
