"""FED-PUB client (Baek et al., "Personalized Subgraph Federated Learning", ICML 2023).

A two-layer GCN whose weights are multiplied by learnable, sparsified masks. The masks are
personal: the client keeps its own and never loads the server's. Each round the client
starts from its personalized model (the server's similarity-weighted mix of all clients),
trains full-batch with CE + l1·‖masks‖₁ + loc_l2·‖w − w_received‖₂ (Adam, its state kept
across rounds as the authors' client saves and reloads it; under ``fedpub-faithful-to='code'``,
the default, the two penalties give no gradient, as in the released code), and uploads its weights
plus a *functional embedding*: the mean output of its GCN on a random proxy graph, which the
server compares across clients. Hyperparameters follow the authors' Cora script.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import scatter

from bouquet import metrics as M
from bouquet.clients.base import ClientCall, ClientReply, arrays_to_model, model_to_arrays
from bouquet.clients.fedavg import stored_optimizer_state, with_optimizer_state
from bouquet.clients.training import load_optimizer_arrays, optimizer_arrays, setting_scores
from bouquet.datasets import GraphClientData
from bouquet.device import to_device, to_numpy
from bouquet.seeding import derive_seed

HIDDEN = 128
UPLOAD = "fedpub"
PROXY_NODES = 100


def _prune(mask: torch.Tensor, l1: float, training: bool) -> torch.Tensor:
    """At evaluation, mask entries below l1 in magnitude are zero (the sparsified model)."""
    return mask if training else mask.masked_fill(mask.abs() < l1, 0.0)


class _Masked(nn.Module):
    """A weight W with a learnable mask M (init 1, as the authors' ``--*-mask-one``)."""

    def __init__(self, d_in: int, d_out: int, l1: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d_out, d_in)))
        self.mask = nn.Parameter(torch.ones(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.l1 = l1

    def masked_weight(self) -> torch.Tensor:
        return self.weight * _prune(self.mask, self.l1, self.training)


class MaskedGCNConv(_Masked):
    """GCN layer (symmetric normalisation with self loops) over masked weights W ⊙ M."""

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        ei, w = gcn_norm(edge_index, None, x.size(0), add_self_loops=True)
        h = x @ self.masked_weight().T
        return scatter(h[ei[0]] * w.unsqueeze(1), ei[1], dim=0, dim_size=x.size(0), reduce="sum") + self.bias


class MaskedLinear(_Masked):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


class MaskedGCN(nn.Module):
    def __init__(self, in_features: int, num_classes: int, l1: float = 1e-3) -> None:
        super().__init__()
        self.conv1 = MaskedGCNConv(in_features, HIDDEN, l1)
        self.conv2 = MaskedGCNConv(HIDDEN, HIDDEN, l1)
        self.clsif = MaskedLinear(HIDDEN, num_classes, l1)

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = F.dropout(F.relu(self.conv1(x, edge_index)), training=self.training)
        return self.conv2(h, edge_index)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = F.dropout(F.relu(self.embed(x, edge_index)), training=self.training)
        return self.clsif(h)


def is_mask(name: str) -> bool:
    return name.endswith("mask")


def proxy_graph(num_features: int, num_graphs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared random proxy input: ``num_graphs`` communities of 100 nodes (p_in 0.1, no
    edges between them) with N(0, 1) features. Every client builds the same one from the
    seed, so it need not travel (the authors ship it from the server)."""
    g = nx.random_partition_graph([PROXY_NODES] * num_graphs, p_in=0.1, p_out=0.0, seed=seed)
    edges = np.array(list(g.edges()), dtype=np.int64).reshape(-1, 2).T
    edge_index = torch.from_numpy(np.concatenate([edges, edges[::-1]], axis=1))
    x = torch.randn(PROXY_NODES * num_graphs, num_features, generator=torch.Generator().manual_seed(seed))
    return x, edge_index


@torch.no_grad()
def functional_embedding(model: MaskedGCN, proxy: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    model.eval()
    return to_numpy(model.embed(*map(to_device, proxy)).mean(0))


def fedpub_loss(model: MaskedGCN, logits: torch.Tensor, y: torch.Tensor, received: dict[str, torch.Tensor] | None,
                l1: float, loc_l2: float, penalties_train: bool = True) -> torch.Tensor:
    """CE + l1·Σ‖mask‖₁ + loc_l2·Σ‖w − w_received‖₂ over non-mask weights (from round 2 on).

    ``penalties_train=False`` is the released code: it sums the two terms over
    ``model.state_dict()``, whose tensors are detached, so they add to the logged loss but give
    no gradient; the masks are trained by cross-entropy alone and ``l1`` only acts as the
    pruning threshold. With the gradient (the paper's objective) Adam drives every mask with a
    weak cross-entropy signal toward 0 by about lr a step."""
    loss = F.cross_entropy(logits, y)
    penalty = logits.new_zeros(())
    for name, param in model.named_parameters():
        if is_mask(name):
            penalty = penalty + l1 * param.abs().sum()
        elif received is not None:
            penalty = penalty + loc_l2 * (param - received[name]).norm(2)
    return loss + (penalty if penalties_train else penalty.detach())


class FedPubClient:
    def _model(self, call: ClientCall) -> tuple[GraphClientData, MaskedGCN]:
        data = call.data
        if not isinstance(data, GraphClientData):
            raise ValueError(f"method='fedpub' needs a graph dataset, got dataset={call.run.dataset!r}")
        model = MaskedGCN(data.x.shape[1], data.num_classes, call.run.fedpub_l1)
        own_masks = {k: v for k, v in call.state.items() if is_mask(k)}
        return data, arrays_to_model(model, {**call.arrays, **own_masks})  # the masks stay personal

    def train(self, call: ClientCall) -> ClientReply:
        data, model = self._model(call)
        run = call.run
        torch.manual_seed(derive_seed(run.seed, call.server_round, call.cid))
        received = None if not call.state else {k: v.detach().clone() for k, v in model.named_parameters()}
        opt = torch.optim.Adam(model.parameters(), lr=run.fedpub_lr, weight_decay=1e-6)
        kept = stored_optimizer_state(call.state)
        if kept:  # the authors' client saves and reloads its Adam state between rounds
            load_optimizer_arrays(opt, kept)
        model.train()
        losses = []
        for _ in range(run.local_epochs):  # one full-batch step per epoch, as the authors' loader
            loss = fedpub_loss(model, model(data.x, data.edge_index)[data.train_mask], data.y[data.train_mask],
                               received, run.fedpub_l1, run.fedpub_loc_l2,
                               penalties_train=run.fedpub_faithful_to == "paper")
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        model.eval()
        scores = setting_scores(model, data, "local_model", call.new_client)
        arrays = model_to_arrays(model)
        proxy = proxy_graph(data.x.shape[1], run.fedpub_n_proxy, derive_seed(run.seed, "fedpub-proxy") % 2**31)
        metrics = {M.NUM_EXAMPLES: int(data.train_mask.sum()), M.TRAIN_LOSS: float(np.mean(losses)), **scores}
        state = with_optimizer_state({k: v for k, v in arrays.items() if is_mask(k)}, optimizer_arrays(opt))
        return ClientReply(arrays, metrics, state, extras={UPLOAD: {"embedding": functional_embedding(model, proxy)}})

    def evaluate(self, call: ClientCall) -> ClientReply:
        """The size-weighted global model with this client's own masks."""
        data, model = self._model(call)
        model.eval()
        scores = setting_scores(model, data, "global_model")
        return ClientReply({}, {M.NUM_EXAMPLES: int(data.train_mask.sum()), **scores}, call.state)


def personalized_weights(embeddings: np.ndarray, scale: float) -> np.ndarray:
    """Row i: how much client i's personalized model takes from each client,
    softmax-like: exp(scale · cos(e_i, e_j)), normalised over j."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sim = np.exp(scale * (unit @ unit.T))
    return sim / sim.sum(1, keepdims=True)
