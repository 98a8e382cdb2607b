"""FedNTD client: cross-entropy plus distillation from the global model on the *not-true*
classes only, so local training keeps the global view of the classes a client lacks
(Lee et al., NeurIPS 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bouquet.clients.base import ClientCall
from bouquet.clients.fedavg import FedAvgClient
from bouquet.clients.training import BatchLoss, distill_from


def not_true(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The logits without each row's true class: (B, C) -> (B, C-1)."""
    keep = torch.ones_like(logits, dtype=torch.bool)
    keep[torch.arange(len(y), device=y.device), y] = False
    return logits[keep].view(len(y), -1)


def ntd_loss(logits: torch.Tensor, global_logits: torch.Tensor, y: torch.Tensor, tau: float, beta: float) -> torch.Tensor:
    """CE(z, y) + beta·tau²·KL(softmax(z̃_g/tau) ‖ softmax(z̃/tau)) over not-true logits z̃."""
    local_nt, global_nt = not_true(logits, y) / tau, not_true(global_logits, y) / tau
    kl = F.kl_div(F.log_softmax(local_nt, 1), F.softmax(global_nt, 1), reduction="batchmean")
    return F.cross_entropy(logits, y) + beta * tau**2 * kl


class FedNTDClient(FedAvgClient):
    def batch_loss(self, call: ClientCall, model: nn.Module) -> BatchLoss | None:
        tau, beta = call.run.fedntd_tau, call.run.fedntd_beta
        return distill_from(model, lambda z, z_g, y: ntd_loss(z, z_g, y, tau, beta))
