"""FedNTD client: cross-entropy plus distillation from the global model on the *not-true*
classes only, so local training keeps the global view of the classes a client lacks
(Lee et al., NeurIPS 2022)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bouquet.clients.base import ClientCall
from bouquet.clients.fedavg import FedAvgClient
from bouquet.clients.training import BatchLoss


def not_true(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The logits without each row's true class: (B, C) -> (B, C-1)."""
    keep = torch.ones_like(logits, dtype=torch.bool)
    keep[torch.arange(len(y)), y] = False
    return logits[keep].view(len(y), -1)


def ntd_loss(logits: torch.Tensor, global_logits: torch.Tensor, y: torch.Tensor, tau: float, beta: float) -> torch.Tensor:
    """CE(z, y) + beta·tau²·KL(softmax(z̃_g/tau) ‖ softmax(z̃/tau)) over not-true logits z̃."""
    local_nt, global_nt = not_true(logits, y) / tau, not_true(global_logits, y) / tau
    kl = F.kl_div(F.log_softmax(local_nt, 1), F.softmax(global_nt, 1), reduction="batchmean")
    return F.cross_entropy(logits, y) + beta * tau**2 * kl


def frozen_copy(model: nn.Module) -> nn.Module:
    """The received global model, fixed for the whole local round."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class FedNTDClient(FedAvgClient):
    def batch_loss(self, call: ClientCall, model: nn.Module) -> BatchLoss | None:
        teacher, tau, beta = frozen_copy(model), call.run.fedntd_tau, call.run.fedntd_beta

        def loss(logits: torch.Tensor, y: torch.Tensor, forward) -> torch.Tensor:
            with torch.no_grad():
                global_logits = forward(teacher)
            return ntd_loss(logits, global_logits, y, tau, beta)

        return loss
