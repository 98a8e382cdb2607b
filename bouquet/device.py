"""The one compute device of this process, and the moves to and from it.

In a simulation each client runs in a Ray actor. Ray reserves a GPU share for it
(``--gpus-per-client``) and makes only that GPU visible. Bouquet's launcher sets
``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0``, so an actor with no share still sees every GPU,
which is why a Ray actor asks Ray what it was given instead of trusting
``torch.cuda.is_available()``. Elsewhere (the ServerApp, a deployed SuperNode, tests) a
visible GPU is used. ``BOUQUET_DEVICE=cpu`` forces the CPU.

Models and batches go to :func:`device`. Everything handed back to Flower leaves through
:func:`to_numpy`. Random draws stay where they were on the CPU, and their results are moved,
so runs on the CPU are unchanged.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from functools import cache
from typing import TypeVar

import numpy as np
import torch

ENV = "BOUQUET_DEVICE"
CHOICES = ("auto", "cpu")
T = TypeVar("T")


def _ray_gpus() -> list[str] | None:
    """The GPU ids Ray assigned to this process if it is a Ray task or actor, else None.
    Ray is never imported here: a process that did not load it is not a Ray worker."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:
        return None  # the driver (the simulation's ServerApp process)
    return context.get_accelerator_ids().get("GPU", [])


@cache
def device() -> torch.device:
    """``cuda`` if this process has a GPU (Ray's share, inside a Ray worker), else ``cpu``.
    Cached: a Ray actor keeps the GPU it was given for its whole life."""
    choice = os.environ.get(ENV, "").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{ENV}={os.environ[ENV]!r} is unknown; choose one of {', '.join(CHOICES)} "
                         "(auto: the GPU Ray assigns, else the CPU)")
    if choice == "cpu" or not torch.cuda.is_available() or _ray_gpus() == []:
        return torch.device("cpu")
    return torch.device("cuda")  # Ray's share is the only visible GPU, so cuda:0 is it


def to_device(x: T) -> T:
    """A tensor or module on :func:`device` (a module moves in place). For a dataclass of
    tensors, such as a client's subgraph, a copy with every tensor moved. None stays None."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor | torch.nn.Module):
        return x.to(device())
    return dataclasses.replace(x, **{f.name: getattr(x, f.name).to(device()) for f in dataclasses.fields(x)
                                     if isinstance(getattr(x, f.name), torch.Tensor)})


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A CPU numpy copy, detached from autograd and from the tensor's memory."""
    return t.detach().cpu().numpy().copy()
