"""Pick the default model for a dataset from its kind and shape."""

from __future__ import annotations

from torch import nn

from bouquet.datasets import ArrayDataset, GraphDataset
from bouquet.models.nets import GCN, MLP, SAGE, CharLSTM, FedAvgCNN, SmallCNN

MODELS = ("auto", "fedavg-cnn", "char-lstm-small", "gcn")  # the ``model`` run-config key


def build_model(data: ArrayDataset | GraphDataset, name: str = "auto") -> nn.Module:
    """``auto``: GraphSAGE for graphs, SmallCNN for images, MLP for tabular rows, CharLSTM for
    text. ``fedavg-cnn``: the FedAvg/FedNTD/FedKPer 2-conv CNN (images only). ``char-lstm-small``:
    the same character LSTM with 16 hidden units (3.2k parameters instead of 79k), for user-level
    DP with few users, where the noise grows with the square root of the parameter count.
    ``gcn``: FED-PUB's 2-layer GCN (hidden 128), the model of its FedAvg (graphs only)."""
    if name == "fedavg-cnn":
        if isinstance(data, GraphDataset) or data.kind != "image":
            raise ValueError(f"model='fedavg-cnn' needs an image dataset, got {data.name!r}")
        return FedAvgCNN(*data.input_shape, data.num_classes)
    if name == "char-lstm-small":
        if isinstance(data, GraphDataset) or data.kind != "text":
            raise ValueError(f"model='char-lstm-small' needs a text dataset, got {data.name!r}")
        return CharLSTM(data.vocab_size, hidden=16)
    if name == "gcn":
        if not isinstance(data, GraphDataset):
            raise ValueError(f"model='gcn' needs a graph dataset, got {data.name!r}")
        return GCN(data.x.shape[1], data.num_classes)
    if name != "auto":
        raise ValueError(f"model={name!r} is unknown; choose one of {', '.join(MODELS)}")
    if isinstance(data, GraphDataset):
        return SAGE(data.x.shape[1], data.num_classes)
    if data.kind == "image":
        c, h, w = data.input_shape
        return SmallCNN(c, h, w, data.num_classes)
    if data.kind == "tabular":
        (features,) = data.input_shape
        return MLP(features, data.num_classes)
    if data.kind == "text":
        return CharLSTM(data.vocab_size)
    raise ValueError(f"no default model for data kind {data.kind!r}")
