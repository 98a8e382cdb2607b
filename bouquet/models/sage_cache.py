"""Mini-batch GraphSAGE without re-aggregating the raw features at every batch.

Graph clients train in mini-batches of labelled nodes over a full-subgraph forward pass. The
first SAGE layer's mean over each node's neighbours of the *raw* features (767–1,433 wide on
Amazon and Cora) was recomputed at every batch although the features never change; on
Amazon Computers it was most of a round. :func:`first_aggregation` computes it once per
subgraph and :func:`forward` reuses it. Everything else runs as PyG's ``BasicGNN.forward`` does,
op for op and in the same order, so outputs, dropout draws and gradients are bitwise those of
``gnn(x, edge_index)`` (tested): results do not change, only the time.
"""

from __future__ import annotations

import torch

# PyG is imported inside the functions: it costs 1.4 s, and only graph runs need it.


def supported(gnn: torch.nn.Module) -> bool:
    """A plain PyG GraphSAGE whose first layer aggregates raw features then projects them."""
    from torch_geometric.nn import SAGEConv  # noqa: PLC0415
    from torch_geometric.nn.models import GraphSAGE  # noqa: PLC0415

    if not isinstance(gnn, GraphSAGE) or gnn.jk_mode is not None or hasattr(gnn, "lin"):
        return False
    conv = gnn.convs[0]
    return (isinstance(conv, SAGEConv) and not conv.project and not conv.normalize
            and not gnn.supports_norm_batch and all(isinstance(n, torch.nn.Identity) for n in gnn.norms))


def first_aggregation(gnn: torch.nn.Module, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """The first layer's neighbour aggregation of ``x`` (no parameters: any model of the same
    architecture can reuse it on this subgraph)."""
    if not supported(gnn):
        raise TypeError(f"{type(gnn).__name__} is not a plain mean GraphSAGE; call it directly")
    if x.requires_grad:
        raise ValueError("the cached aggregation is for fixed input features")
    with torch.no_grad():
        return gnn.convs[0].propagate(edge_index, x=(x, x), size=None)


def forward(gnn: torch.nn.Module, x: torch.Tensor, edge_index: torch.Tensor, aggregated: torch.Tensor) -> torch.Tensor:
    """``gnn(x, edge_index)`` with the first layer's aggregation taken from ``aggregated``."""
    h = x
    for i, (conv, norm) in enumerate(zip(gnn.convs, gnn.norms)):
        if i == 0:  # SAGEConv.forward with propagate() replaced by the cached result
            out = conv.lin_l(aggregated)
            if conv.root_weight:
                out = out + conv.lin_r(h)
            h = out
        else:
            h = conv(h, edge_index)
        if i < gnn.num_layers - 1:
            if gnn.act is not None and gnn.act_first:
                h = gnn.act(h)
            h = norm(h)
            if gnn.act is not None and not gnn.act_first:
                h = gnn.act(h)
            h = gnn.dropout(h)
    return h


def cached(gnn: torch.nn.Module, x: torch.Tensor, edge_index: torch.Tensor):
    """``g -> g(x, edge_index)`` for ``gnn`` and any GraphSAGE of its architecture, aggregating
    ``x`` once; a model that :func:`supported` refuses is simply called."""
    if not supported(gnn) or x.requires_grad:
        return lambda g: g(x, edge_index)
    aggregated = first_aggregation(gnn, x, edge_index)
    return lambda g: forward(g, x, edge_index, aggregated)
