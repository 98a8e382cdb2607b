"""Shared local training and evaluation loops for array data and subgraphs.

Graphs train in mini-batches of *labelled nodes* over a full-subgraph forward pass, so
``batch-size`` and ``local-epochs`` mean the same thing for every kind of data; a GraphSAGE's
first-layer aggregation of the fixed features is computed once per call
(:mod:`bouquet.models.sage_cache`, bitwise the same result).

Models and subgraphs are already on :func:`bouquet.device.device` (``arrays_to_model``,
``ClientCall.data``); array batches are moved here, and scores come back to the CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bouquet import metrics as M
from bouquet.datasets import ArrayClientData, GraphClientData
from bouquet.device import to_device
from bouquet.models import sage_cache
from bouquet.models.nets import SAGE

ExtraLoss = Callable[[nn.Module], torch.Tensor]
# (logits, labels, forward) -> loss; ``forward(other)`` gives another module's logits on the
# same batch (e.g. the frozen global model for distillation).
BatchLoss = Callable[[torch.Tensor, torch.Tensor, Callable[[nn.Module], torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    num_examples: int


def num_train_examples(data: ArrayClientData | GraphClientData) -> int:
    if isinstance(data, GraphClientData):
        return int(data.train_mask.sum())
    return len(data.y_train)


def train_local(
    model: nn.Module,
    data: ArrayClientData | GraphClientData,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    extra_loss: ExtraLoss | None = None,
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
    batch_loss: BatchLoss | None = None,
    optimizer_state: dict[str, np.ndarray] | None = None,
) -> float:
    """SGD (momentum 0.9) or Adam over the client's training split; returns the mean batch loss.
    The optimizer is fresh every call (no state crosses rounds), as in most FL baselines, unless
    ``optimizer_state`` is given: it then starts from that dict (empty: fresh) and the dict is
    replaced by its state at the end (FED-PUB's code keeps Adam's moments across rounds)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model.parameters(), optimizer, lr, weight_decay)
    if optimizer_state:
        load_optimizer_arrays(opt, optimizer_state)
    model.train()
    if isinstance(data, GraphClientData):
        targets = data.train_mask.nonzero().flatten()
        x_all, y_all = None, data.y
        graph_forward = subgraph_forward(model, data)
    else:
        targets = torch.arange(len(data.y_train))
        x_all, y_all = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    losses = []
    for _ in range(epochs):
        order = targets[torch.randperm(len(targets), generator=gen)]
        for batch in order.split(batch_size):
            if isinstance(data, GraphClientData):
                forward = lambda m, b=batch: graph_forward(m)[b]  # noqa: E731
            else:
                forward = lambda m, xb=to_device(x_all[batch]): m(xb)  # noqa: E731
            logits, yb = forward(model), to_device(y_all[batch])
            if batch_loss is None:
                loss = F.cross_entropy(logits, yb)
            else:
                loss = batch_loss(logits, yb, forward)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    if optimizer_state is not None:
        optimizer_state.clear()
        optimizer_state.update(optimizer_arrays(opt))
    return float(np.mean(losses)) if losses else float("nan")


def make_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def optimizer_arrays(opt: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    """The optimizer's per-parameter state (Adam's step and moments, SGD's momentum) as flat
    arrays ``"<param index>/<name>"``, so it can live in a client's state record."""
    return {f"{idx}/{name}": torch.as_tensor(value).detach().cpu().numpy().copy()
            for idx, values in opt.state_dict()["state"].items() for name, value in values.items()}


def load_optimizer_arrays(opt: torch.optim.Optimizer, arrays: dict[str, np.ndarray]) -> None:
    """Inverse of :func:`optimizer_arrays`; the learning rate and other settings stay this call's."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in arrays.items():
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = torch.from_numpy(np.array(value))
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def subgraph_forward(model: nn.Module, data: GraphClientData) -> Callable[[nn.Module], torch.Tensor]:
    """``m -> m(data.x, data.edge_index)`` for ``model`` and any model of its architecture
    (a distillation teacher), reusing one first-layer aggregation where the model allows it."""
    if not isinstance(model, SAGE):
        return lambda m: m(data.x, data.edge_index)
    embed = sage_cache.cached(model.gnn, data.x, data.edge_index)
    return lambda m: embed(m.gnn)


def distill_from(model: nn.Module, loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> BatchLoss:
    """A :data:`BatchLoss` ``loss(logits, teacher_logits, y)`` whose teacher is a frozen copy of
    ``model`` as it is now (the received global model), run on the same batch."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def batch_loss(logits: torch.Tensor, y: torch.Tensor, forward) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = forward(teacher)
        return loss(logits, teacher_logits, y)

    return batch_loss


Predictor = Callable[..., torch.Tensor]  # (x) or (x, edge_index) -> class scores


@torch.no_grad()
def setting_scores(
    predict: Predictor,
    data: ArrayClientData | GraphClientData,
    model_name: str,
    new_client: GraphClientData | None = None,
) -> dict[str, float | np.ndarray]:
    """Accuracy of one model in every evaluation setting the data has, with counts; on
    ``local_test`` also the class-balanced accuracy and (local model) the correctness vector.

    Graphs: ``local_test``/``local_val`` on the training graph, ``unseen_node`` and
    ``missing_class`` on the grown graph, ``new_client`` on the held-out subgraph.
    """
    out: dict[str, float | np.ndarray] = {}

    def put(setting: str, scores: torch.Tensor, y: torch.Tensor) -> None:
        if len(y):
            pred, y = scores.argmax(1).cpu(), y.cpu()
            out[M.name(model_name, setting)] = float((pred == y).float().mean())
            out[M.count_key(setting)] = int(len(y))
            if setting == M.LOCAL_TEST:  # forgetting metrics (bouquet.metrics.track_forgetting)
                out[M.stat(M.BALANCED, M.name(model_name, setting))] = M.balanced_accuracy(pred.numpy(), y.numpy())
                if model_name == "local_model":
                    out[M.CORRECT] = (pred == y).numpy()

    if isinstance(data, ArrayClientData):
        xt = torch.from_numpy(data.x_test)
        scores = torch.cat([predict(to_device(xt[i : i + 1024])) for i in range(0, len(xt), 1024)]) if len(xt) else xt
        put(M.LOCAL_TEST, scores, torch.from_numpy(data.y_test))
        return out
    seen = predict(data.x, data.edge_index)
    put(M.LOCAL_TEST, seen[data.test_mask], data.y[data.test_mask])
    put(M.LOCAL_VAL, seen[data.val_mask], data.y[data.val_mask])
    if bool(data.unseen_mask.any() or data.missing_mask.any()):
        grown = predict(data.x, data.full_edge_index)
        put(M.UNSEEN_NODE, grown[data.unseen_mask], data.y[data.unseen_mask])
        put(M.MISSING_CLASS, grown[data.missing_mask], data.y[data.missing_mask])
    if new_client is not None:
        put(M.NEW_CLIENT, predict(new_client.x, new_client.edge_index), new_client.y)
    return out


def module_predictor(model: nn.Module) -> Predictor:
    model.eval()
    return model


@torch.no_grad()
def predict_arrays(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on any array input, in batches on the device (e.g. the global test
    set); returned on the CPU."""
    model.eval()
    xt = torch.from_numpy(x)
    return torch.cat([model(to_device(xt[i : i + batch_size])) for i in range(0, len(xt), batch_size)]).cpu()


def evaluate_arrays(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> EvalResult:
    """Batched evaluation on any (x, y) arrays, e.g. the global test set on the server."""
    if len(y) == 0:
        return EvalResult(float("nan"), float("nan"), 0)
    return _score(predict_arrays(model, x, batch_size), torch.from_numpy(y))


def _score(logits: torch.Tensor, y: torch.Tensor) -> EvalResult:
    if len(y) == 0:
        return EvalResult(float("nan"), float("nan"), 0)
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return EvalResult(float(acc), float(loss), int(len(y)))
