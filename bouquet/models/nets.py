"""The small default networks; sizes follow the papers' CPU-scale baselines."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv(16,5)-pool-conv(32,5)-pool-fc(64)-fc(C): the FMNIST perf-anchor CNN, any input size."""

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = 32 * (height // 4) * (width // 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FedAvgCNN(nn.Module):
    """conv(32,5)-pool-conv(64,5)-pool-fc(512)-fc(C): the 2-conv CNN of McMahan et al. as the
    FedNTD / FedKPer code builds it, 'same' padding (2) on every input (``FedAvgNetCIFAR``:
    32×32, flatten 4096, 2,156,490 parameters with 10 classes; ``MedMNISTNet``: 28×28,
    flatten 3136)."""

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int) -> None:
        super().__init__()
        pad = 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = lambda n: ((n + 2 * pad - 4) // 2 + 2 * pad - 4) // 2  # noqa: E731
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * side(height) * side(width), 512), nn.ReLU(),
                                  nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Two hidden layers of 64; enough for UCI-sized tabular tasks."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CharLSTM(nn.Module):
    """Next-character model in the LEAF Shakespeare style (embedding 8, LSTM 128)."""

    def __init__(self, vocab_size: int, embed: int = 8, hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embed(x))
        return self.out(h[:, -1])


class SAGE(nn.Module):
    """Two-layer mean-aggregation GraphSAGE (PyG) over a client's subgraph."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 64, dropout: float = 0.5) -> None:
        super().__init__()
        from torch_geometric.nn.models import GraphSAGE  # noqa: PLC0415 (1.4 s import; graphs only)

        self.gnn = GraphSAGE(in_features, hidden, num_layers=2, out_channels=num_classes, dropout=dropout)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.gnn(x, edge_index)


class GCN(nn.Module):
    """FED-PUB's unmasked GCN (its FedAvg model): GCNConv(128)-ReLU-dropout-GCNConv(128)-ReLU-
    dropout-Linear(C), symmetric normalisation with self loops."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv  # noqa: PLC0415 (1.4 s import; graphs only)

        self.conv1 = GCNConv(in_features, hidden)
        self.conv2 = GCNConv(hidden, hidden)
        self.clsif = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = nn.functional.dropout(torch.relu(self.conv1(x, edge_index)), training=self.training)
        h = nn.functional.dropout(torch.relu(self.conv2(h, edge_index)), training=self.training)
        return self.clsif(h)
