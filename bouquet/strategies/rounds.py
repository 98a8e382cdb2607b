"""The round loop Bouquet runs around any Flower strategy.

Flower's ``Strategy.start`` cannot resume, cannot checkpoint, and hands the strategy every
reply. This loop calls the same four strategy methods (``configure_train``, ``aggregate_train``,
``configure_evaluate``, ``aggregate_evaluate``) on whatever it is given, a Bouquet method or
one wrapped in Flower's ``DifferentialPrivacy*`` wrappers, and puts the :class:`ReplyGate`
between the grid and the strategy: the strategy only sees sound replies, in partition order.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from bouquet.seeding import derive_seed
from bouquet.strategies.gate import ReplyGate


class RunFailed(RuntimeError):
    """The run could not do its job (no round trained, most replies rejected, a privacy
    budget reached): it must not end as completed."""


class Stop(RunFailed):  # noqa: N818 (a stop, not a bug)
    """Raised by a strategy layer before a round it must not run (e.g. the next release would
    exceed the privacy budget); what was written so far stays."""


def layers(strategy) -> list:
    """The strategy and every strategy it wraps (Flower's wrappers keep it as ``.strategy``)."""
    out = [strategy]
    while hasattr(out[-1], "strategy"):
        out.append(out[-1].strategy)
    return out


def bouquet_layer(strategy):
    """The innermost layer that carries Bouquet's hooks (rules, recorder, gate)."""
    for layer in layers(strategy):
        if hasattr(layer, "gate"):
            return layer
    raise TypeError(f"{type(strategy).__name__} wraps no Bouquet strategy (nothing has a .gate)")


def train_round(strategy: Strategy, server_round: int, replies: Iterable[Message],
                reference: ArrayRecord | None = None) -> tuple[ArrayRecord | None, MetricRecord | None]:
    """Screen the replies, aggregate the sound ones with ``strategy`` and check the result.
    None arrays: the global model stays as it was (too few sound replies, a failed or
    non-finite aggregate), logged; never raises for a bad reply."""
    hooks = bouquet_layer(strategy)
    gate: ReplyGate = hooks.gate
    if reference is None:
        reference = hooks.global_arrays
    sound = gate.screen(server_round, replies, "train", reference if hooks.has_global_model else None)
    gate.tally["rounds"] += 1
    if len(sound) < hooks.min_sound_replies:
        log(WARNING, "round %d: %d sound update(s), fewer than min-replies=%d; the global model stays as it was",
            server_round, len(sound), hooks.min_sound_replies)
        return None, None
    try:
        arrays, metrics = strategy.aggregate_train(server_round, sound)
    except Stop:
        raise
    except Exception as exc:  # noqa: BLE001 (validated replies should not get here; never crash a round)
        log(WARNING, "round %d: aggregation failed (%s: %s); the global model stays as it was",
            server_round, type(exc).__name__, exc)
        gate.tally["rounds_failed"] += 1
        return None, None
    if arrays is not None and not all(np.all(np.isfinite(v.numpy())) for v in arrays.values()):
        log(WARNING, "round %d: the aggregate is not finite; the global model stays as it was", server_round)
        gate.tally["rounds_failed"] += 1
        return None, None
    if arrays is not None or not hooks.has_global_model:
        gate.tally["rounds_trained"] += 1
    return arrays, metrics


def evaluate_round(strategy: Strategy, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
    sound = bouquet_layer(strategy).gate.screen(server_round, replies, "evaluate", None)
    return strategy.aggregate_evaluate(server_round, sound) if sound else None


def configure(strategy: Strategy, phase: str, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
              grid: Grid) -> list[Message]:
    """The strategy's messages for ``phase`` ("train" | "evaluate"), sampled with Python's
    ``random`` seeded by (seed, phase, round) over the nodes in partition-id order, so the
    same clients are drawn whatever order the SuperLink lists them in."""
    gate: ReplyGate = bouquet_layer(strategy).gate
    random.seed(derive_seed(gate.cfg.seed, "sample", phase, server_round))
    make = strategy.configure_train if phase == "train" else strategy.configure_evaluate
    return gate.sent(phase, make(server_round, arrays, config, gate.view(grid)))


def run_rounds(strategy: Strategy, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int, *,
               timeout: float = 3600, train_config: ConfigRecord | None = None,
               evaluate_config: ConfigRecord | None = None,
               evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
               first_round: int = 1, on_round_end: Callable[[int, ArrayRecord], None] | None = None) -> ArrayRecord:
    """Flower's round loop (train, client evaluate, server evaluate), from ``first_round``
    (resume), with ``on_round_end(round, arrays)`` after each completed round (checkpoint).
    Sampling is seeded per round and phase; ``timeout`` closes a phase with what arrived."""
    hooks = bouquet_layer(strategy)
    arrays = initial_arrays
    if first_round == 1 and evaluate_fn is not None:
        evaluate_fn(0, arrays)
    for rnd in range(first_round, num_rounds + 1):
        log(INFO, "[ROUND %s/%s]", rnd, num_rounds)
        phase = functools.partial(hooks.recorder.phase, rnd)
        hooks.recorder.round_started(rnd)
        with phase("train"):  # sample, send, wait for every reply
            messages = configure(strategy, "train", rnd, arrays, ConfigRecord(dict(train_config or {})), grid)
            replies = list(grid.send_and_receive(messages, timeout=timeout)) if messages else []
        with phase("aggregate"):  # screen and aggregate
            new_arrays, _ = train_round(strategy, rnd, replies, reference=arrays)
        if new_arrays is not None:
            arrays = new_arrays
        with phase("evaluate"):
            messages = configure(strategy, "evaluate", rnd, arrays, ConfigRecord(dict(evaluate_config or {})), grid)
            replies = list(grid.send_and_receive(messages, timeout=timeout)) if messages else []
            evaluate_round(strategy, rnd, replies)
        if evaluate_fn is not None:
            with phase("server-evaluate"):
                evaluate_fn(rnd, arrays)
        if on_round_end is not None:
            with phase("checkpoint"):
                on_round_end(rnd, arrays)
        hooks.recorder.round_finished(rnd)
    return arrays


def state_arrays(strategy: Strategy) -> dict[str, np.ndarray]:
    """What every layer carries from round to round (a checkpoint's ``strategy`` part)."""
    out: dict[str, np.ndarray] = {}
    for layer in layers(strategy):
        out.update(getattr(layer, "state_arrays", dict)())
    return out


def load_state_arrays(strategy: Strategy, arrays: dict[str, np.ndarray]) -> None:
    for layer in layers(strategy):
        if hasattr(layer, "load_state_arrays"):
            layer.load_state_arrays(arrays)
