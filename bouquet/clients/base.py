"""The contract every method's client side follows.

A client step is a function of the logical client id, the incoming arrays and config, and
that client's saved state; it returns arrays, metrics and the new state. Nothing here knows
about Flower: ``bouquet.client_app`` adapts messages and ``Context.state`` to this, so one
SuperNode could later run many logical clients per message (the state is keyed by client id).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import numpy as np
import torch
from torch import nn

from bouquet.config import RunConfig, data_spec
from bouquet.datasets import (
    ArrayClientData,
    ExportedPartition,
    GraphClientData,
    client_data,
    data_root,
    load_dataset,
    load_partition,
    new_client_graph,
)
from bouquet.device import to_device, to_numpy
from bouquet.models import build_model
from bouquet.privacy.contribution import bounded_indices
from bouquet.seeding import derive_seed

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class ClientCall:
    """Everything one client step may depend on."""

    cid: int
    num_partitions: int
    server_round: int
    run: RunConfig
    arrays: Arrays
    config: dict[str, float | int | str] = field(default_factory=dict)
    state: Arrays = field(default_factory=dict)
    extras: dict[str, Arrays] = field(default_factory=dict)  # other ArrayRecords the server sent
    # node-config ``data-path``: a site's exported partition; then the full dataset is never read
    data_path: str = ""
    # node-config ``model-arch``: the architecture this site runs (heterogeneous-model methods); -1 = the run's rule
    node_arch: int = -1

    @cached_property
    def exported(self) -> ExportedPartition:
        """This node's folder, checked against the run config and its checksums."""
        return load_partition(self.data_path, data_spec(self.run, self.num_partitions), self.cid)

    @cached_property
    def data(self) -> ArrayClientData | GraphClientData:
        """This client's data. A subgraph is used whole, so it is put on the device; array data
        stays numpy, and the loops move what they use."""
        data = self.exported.data if self.data_path else client_data(data_spec(self.run, self.num_partitions), self.cid)
        if self.run.data_fraction < 1.0 and isinstance(data, ArrayClientData):
            # GeFL's protocol: each client keeps a seeded share of its training split (600 of
            # MNIST's 6000 with 10 clients); the local test split is untouched
            n = len(data.y_train)
            keep = bounded_indices(n, max(int(n * self.run.data_fraction), 1), derive_seed(self.run.seed, "data-fraction", self.cid))
            data = dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep],
                                       train_indices=data.train_indices[keep])
        k = int(self.config.get("dp-k", 0))
        if k and isinstance(data, ArrayClientData) and len(data.y_train) > k:
            # user-level DP's contribution bound: a seeded random k of this user's training examples
            keep = bounded_indices(len(data.y_train), k, derive_seed(self.run.seed, "dp-k", self.cid))
            data = dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep],
                                       train_indices=data.train_indices[keep])
        return to_device(data) if isinstance(data, GraphClientData) else data

    @cached_property
    def new_client(self) -> GraphClientData | None:
        """The Louvain held-out subgraph, on which each client's model is also scored (on the device)."""
        if self.data_path:
            return to_device(self.exported.new_client)
        return to_device(new_client_graph(data_spec(self.run, self.num_partitions)))

    @property
    def learning_rate(self) -> float:
        return float(self.config.get("lr", self.run.learning_rate))

    def new_model(self) -> nn.Module:
        if self.data_path:
            return build_model(self.exported.info.stub(), self.run.model)
        return build_model(load_dataset(self.run.dataset, data_root(self.run.data_dir)), self.run.model)


@dataclass(frozen=True)
class ClientReply:
    arrays: Arrays
    metrics: dict[str, float]
    state: Arrays = field(default_factory=dict)
    extras: dict[str, Arrays] = field(default_factory=dict)  # sent back as named ArrayRecords


class ClientLogic(Protocol):
    """A method's client side; both steps are pure in (call) -> reply."""

    def train(self, call: ClientCall) -> ClientReply: ...

    def evaluate(self, call: ClientCall) -> ClientReply: ...


def model_to_arrays(model: nn.Module) -> Arrays:
    """The model's weights as CPU numpy arrays (what Flower sends), wherever it ran."""
    return {k: to_numpy(v) for k, v in model.state_dict().items()}


def arrays_to_model(model: nn.Module, arrays: Arrays) -> nn.Module:
    """``model`` with these weights, on :func:`bouquet.device.device` (where every model runs)."""
    model.load_state_dict({k: torch.from_numpy(np.asarray(v).copy()) for k, v in arrays.items()})
    return to_device(model)
