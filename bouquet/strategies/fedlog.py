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


class FedLoGStrategy(BouquetStrategy, FedAvg):
    weight_key = "fedlog-uniform"  # every client counts once, as in the authors' server
    weight_range = (1.0, 1.0)  # anything else would be a client re-weighting itself
    extra_records = (UPLOAD,)
    server_evaluates = False  # a FedLoG model predicts only with a client's synthetic nodes

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        data = load_dataset(self.cfg.dataset, data_root(self.cfg.data_dir))
        self.num_classes, self.num_features = data.num_classes, data.x.shape[1]
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
        upload = content.get(UPLOAD)
        if not isinstance(upload, ArrayRecord) or not {"syn_head", "class_share"} <= set(upload.keys()):
            return f"no '{UPLOAD}' record with syn_head and class_share"
        want = (self.num_classes * self.cfg.fedlog_num_proto, self.num_features)
        syn, share = upload["syn_head"].numpy(), upload["class_share"].numpy()
        if syn.shape != want or share.shape != (self.num_classes,):
            return f"'{UPLOAD}' shapes {syn.shape}, {share.shape}; expected {want}, ({self.num_classes},)"
        if not (np.isfinite(syn).all() and np.isfinite(share).all()) or (share < 0).any():
            return f"'{UPLOAD}' contains NaN, Inf or negative class shares"
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
