"""FED-PUB server: each client gets its own model, the mix of all clients' weights by the
similarity of their functional embeddings; the global model is the size-weighted mean."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from bouquet.clients.fedpub import HIDDEN, UPLOAD, personalized_weights
from bouquet.strategies.base import BouquetStrategy


def mix(arrays: list[dict[str, np.ndarray]], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Σ_j weights[j] · arrays_j, key by key (float64 accumulation, float32 out)."""
    return {k: sum(w * a[k].astype(np.float64) for w, a in zip(weights, arrays, strict=True)).astype(np.float32)
            for k in arrays[0]}


class FedPubStrategy(BouquetStrategy, FedAvg):
    extra_records = (UPLOAD,)  # the functional embedding

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.personalized: dict[int, dict[str, np.ndarray]] = {}  # partition id -> arrays

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"{pid}/{k}": v for pid, arrays in self.personalized.items() for k, v in arrays.items()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for key, value in arrays.items():
            pid, name = key.split("/", 1)
            self.personalized.setdefault(int(pid), {})[name] = value

    def extra_problem(self, content: RecordDict) -> str | None:
        upload = content.get(UPLOAD)
        if not isinstance(upload, ArrayRecord) or "embedding" not in upload:
            return f"no '{UPLOAD}' record with a functional embedding"
        emb = upload["embedding"].numpy()
        if emb.shape != (HIDDEN,) or not np.isfinite(emb).all():
            return f"functional embedding has shape {emb.shape} (expected ({HIDDEN},)) or is not finite"
        return None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        sound = list(replies)
        if not sound:
            return None, None
        embeddings = np.stack([m.content.pop(UPLOAD)["embedding"].numpy() for m in sound])
        arrays = [{k: v.numpy() for k, v in m.content["arrays"].items()} for m in sound]
        weights = personalized_weights(embeddings.astype(np.float64), self.cfg.fedpub_norm_scale)
        for i, msg in enumerate(sound):
            self.personalized[self.clients.pid(msg.metadata.src_node_id)] = mix(arrays, weights[i])
        return super().aggregate_train(server_round, sound)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        for msg in messages:
            own = self.personalized.get(self.clients.pid(msg.metadata.dst_node_id))
            if own is not None:  # clients not yet sampled start from the global model
                msg.content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in own.items()}),
                                          "config": config})
        return messages
