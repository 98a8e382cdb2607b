"""DP-SGD-ELS client: Poisson-sample this user's ≤ k examples at rate q, clip each
example's gradient (all parameters together) to C, send the sum. No local step: the server
adds the noise and steps (``bouquet.strategies.els``)."""

from __future__ import annotations

import secrets

import numpy as np
import torch
import torch.nn.functional as F

from bouquet import metrics as M
from bouquet.clients.base import ClientCall, ClientReply
from bouquet.clients.fedavg import FedAvgClient
from bouquet.clients.training import num_train_examples
from bouquet.device import to_device
from bouquet.seeding import derive_seed
from bouquet.strategies.els import SAMPLED


def clipped_gradient_sum(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float
                         ) -> tuple[dict[str, torch.Tensor], float]:
    """Σ_i g_i · min(1, C / ‖g_i‖) over the rows of (x, y), g_i the gradient of example i's
    cross-entropy over all parameters; and the mean loss. One backward per example: faster
    here than torch.func's vmap, which has no batching rule for the LSTM."""
    params = dict(model.named_parameters())
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    losses = []
    for i in range(len(y)):
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        loss.backward()
        grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in params.items()}
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values()))
        scale = min(1.0, clip / max(float(norm), 1e-12))
        for k, g in grads.items():
            total[k] += scale * g
        losses.append(float(loss.detach()))
    return total, float(np.mean(losses)) if losses else float("nan")


class ELSClient(FedAvgClient):
    def train(self, call: ClientCall) -> ClientReply:
        model = self.start_model(call)
        model.train()
        data = call.data
        q, clip = float(call.config["dp-sampling-rate"]), float(call.config["dp-clip"])
        seed = secrets.randbits(63) if call.run.dp_secure_noise else derive_seed(call.run.seed, "els", call.server_round, call.cid)
        chosen = np.flatnonzero(np.random.default_rng(seed).random(len(data.y_train)) < q)
        x = to_device(torch.as_tensor(data.x_train[chosen]))
        y = to_device(torch.as_tensor(data.y_train[chosen]).long())
        grads, loss = clipped_gradient_sum(model, x, y, clip)
        arrays = {k: (grads[k] if k in grads else torch.zeros_like(v)).detach().cpu().numpy().astype(v.detach().cpu().numpy().dtype)
                  for k, v in model.state_dict().items()}
        metrics = {M.NUM_EXAMPLES: num_train_examples(data), SAMPLED: len(chosen), M.TRAIN_LOSS: loss}
        return ClientReply(arrays, metrics, call.state)
