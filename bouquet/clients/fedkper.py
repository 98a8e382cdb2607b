"""FedKPer client (arXiv 2605.00698, after the official code): *selective* alignment with the
global model, strong when the global model already fits the batch and weak when it does not,
and a reliability × label-diversity score that the server weights the upload by."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bouquet.clients.base import ClientCall, ClientReply, arrays_to_model
from bouquet.clients.fedavg import FedAvgClient
from bouquet.clients.training import BatchLoss, distill_from, evaluate_arrays, module_predictor
from bouquet.datasets import GraphClientData

SCORE = "fedkper-score"  # the server's weighted_by_key


def alignment_beta(global_logits: torch.Tensor, y: torch.Tensor, max_beta: float) -> torch.Tensor:
    """beta = min(1 / (CE(z_g, y) + 1e-8), max_beta): one scalar per batch, no gradient."""
    return torch.clamp(1.0 / (F.cross_entropy(global_logits, y) + 1e-8), max=max_beta)


def kper_loss(logits: torch.Tensor, global_logits: torch.Tensor, y: torch.Tensor, tau: float, max_beta: float) -> torch.Tensor:
    """CE(z, y) + beta·tau²·KL(softmax(z_g/tau) ‖ softmax(z/tau)) over all classes."""
    kl = F.kl_div(F.log_softmax(logits / tau, 1), F.softmax(global_logits / tau, 1), reduction="batchmean")
    return F.cross_entropy(logits, y) + alignment_beta(global_logits, y, max_beta) * tau**2 * kl


def label_diversity(labels: np.ndarray, num_classes: int) -> float:
    """Entropy of the label histogram over all C classes divided by log C, in [0, 1]."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    if counts.sum() == 0 or num_classes < 2:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(np.clip(-(p * np.log(p)).sum() / math.log(num_classes), 0.0, 1.0))


def reliability_score(train_accuracy: float, diversity: float) -> float:
    """s_k = max(acc_k, 0) · (1e-6 + div_k); NaN accuracy stays NaN (the server falls back)."""
    return max(train_accuracy, 0.0) * (1e-6 + diversity) if train_accuracy == train_accuracy else float("nan")


class FedKPerClient(FedAvgClient):
    def batch_loss(self, call: ClientCall, model: nn.Module) -> BatchLoss | None:
        tau, max_beta = call.run.fedkper_tau, call.run.fedkper_max_beta
        return distill_from(model, lambda z, z_g, y: kper_loss(z, z_g, y, tau, max_beta))

    def train(self, call: ClientCall) -> ClientReply:
        reply = super().train(call)
        model = arrays_to_model(call.new_model(), reply.arrays)  # the trained local model
        data = call.data
        if isinstance(data, GraphClientData):
            with torch.no_grad():
                pred = module_predictor(model)(data.x, data.edge_index).argmax(1)
            labels = data.y[data.train_mask]
            accuracy = float((pred[data.train_mask] == labels).float().mean())
            labels = labels.cpu().numpy()
        else:
            accuracy = evaluate_arrays(model, data.x_train, data.y_train).accuracy
            labels = data.y_train
        score = reliability_score(accuracy, label_diversity(labels, data.num_classes))
        return ClientReply(reply.arrays, {**reply.metrics, SCORE: score, "train_accuracy": accuracy}, reply.state)
