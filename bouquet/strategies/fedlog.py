"""FedLoG server: uniform mean of the shared modules, plus global synthetic nodes condensed
from the clients' head synthetic nodes by class share (``bouquet.clients.fedlog.condense``)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from bouquet.clients.fedlog import GLOBAL, UPLOAD, condense
from bouquet.datasets import data_root, load_dataset
from bouquet.seeding import derive_seed
from bouquet.strategies.base import BouquetStrategy


UPLOAD_KEYS = frozenset({"syn_head", "head_means", "class_share"})
SYN_BOUND = 100.0  # synthetic nodes live in feature space; honest ones stay within a few feature scales


class FedLoGStrategy(BouquetStrategy, FedAvg):
    weight_key = "fedlog-uniform"  # every client counts once, as in the authors' server
    weight_range = (1.0, 1.0)  # anything else would be a client re-weighting itself
    extra_records = (UPLOAD,)
    server_evaluates = False  # a FedLoG model predicts only with a client's synthetic nodes

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        data = load_dataset(self.cfg.dataset, data_root(self.cfg.data_dir))
        self.num_classes, self.num_features = data.num_classes, data.x.shape[1]
        self.syn_bound = SYN_BOUND * max(1.0, float(np.abs(np.asarray(data.x)).max()))
        self.global_synthetic: tuple[np.ndarray, np.ndarray] | None = None

    def state_arrays(self) -> dict[str, np.ndarray]:
        if self.global_synthetic is None:
            return {}
        x, y = self.global_synthetic
        return {"global_synthetic_x": x, "global_synthetic_y": y}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if "global_synthetic_x" in arrays:
            self.global_synthetic = (arrays["global_synthetic_x"], arrays["global_synthetic_y"])

    def extra_problem(self, content: RecordDict) -> str | None:
        """The upload condensed into every client's global synthetic nodes, outside ``arrays``
        (so neither ``max-update-norm`` nor a robust aggregator touches it): exactly its keys and
        shapes, class shares that are a distribution (each in [0, 1], summing to at most 1, as a
        client's label counts over their total), and synthetic nodes within SYN_BOUND times the
        dataset's largest feature magnitude, so no client can weigh itself over the others or push
        the shared nodes anywhere."""
        upload = content.get(UPLOAD)
        if not isinstance(upload, ArrayRecord) or not {"syn_head", "class_share"} <= set(upload.keys()):
            return f"no '{UPLOAD}' record with syn_head and class_share"
        if extra := sorted(set(upload.keys()) - UPLOAD_KEYS):
            return f"'{UPLOAD}' carries unexpected arrays {extra}"
        syn, share = upload["syn_head"].numpy(), upload["class_share"].numpy()
        want = {"syn_head": (self.num_classes * self.cfg.fedlog_num_proto, self.num_features),
                "class_share": (self.num_classes,), "head_means": (self.num_classes, self.num_features)}
        for key in upload.keys():
            got = upload[key].numpy()
            if got.shape != want[key] or not np.issubdtype(got.dtype, np.floating) or not np.isfinite(got).all():
                return f"'{UPLOAD}' {key!r} is {got.dtype} {got.shape}; expected finite floats of shape {want[key]}"
        if (share < 0).any() or (share > 1).any() or share.sum() > 1 + 1e-4:
            return f"'{UPLOAD}' class shares {np.round(share, 4).tolist()} are not a distribution"
        if np.abs(syn).max(initial=0.0) > self.syn_bound:
            return f"'{UPLOAD}' synthetic nodes reach {np.abs(syn).max():.3g}, beyond {self.syn_bound:.3g}"
        return None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        sound = list(replies)
        if not sound:
            return None, None
        uploads = [{k: v.numpy() for k, v in m.content.pop(UPLOAD).items()} for m in sound]
        rng = np.random.default_rng(derive_seed(self.cfg.seed, "fedlog-permutation", server_round))
        self.global_synthetic = condense(uploads, self.num_classes, rng)
        return super().aggregate_train(server_round, sound)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if self.global_synthetic is not None and messages:
            x, y = self.global_synthetic
            messages[0].content[GLOBAL] = ArrayRecord({"x": Array(x), "y": Array(y)})  # shared RecordDict
        return messages
