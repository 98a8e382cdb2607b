"""What every Bouquet strategy adds to Flower's: reproducible sampling and ordering,
rejection of bad replies (``bouquet.strategies.replies``), an optional update-norm bound and
robust aggregation, per-round metrics written to disk, and a verdict on whether the run trained.

:class:`BouquetStrategy` is a mixin placed before a Flower strategy class
(``class FedAvgStrategy(BouquetStrategy, FedAvg)``), so the aggregation math stays Flower's.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from bouquet import metrics as M
from bouquet.config import RunConfig
from bouquet.federation import ClientDirectory
from bouquet.results import RunRecorder
from bouquet.seeding import derive_seed
from bouquet.strategies.replies import ReplyRules, clip_update, reply_problem, robust_aggregate


class RunFailed(RuntimeError):
    """The run could not do its job (no round trained, most replies rejected): it must not
    end as completed."""


def aggregate_metric_records(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Weighted mean of client metrics that leaves ids and counts out (Flower's averages all)."""
    rows = [dict(next(iter(r.metric_records.values()))) for r in records]
    return MetricRecord(M.weighted_mean(rows, weighting_key))


class _SortedGrid:
    """A Grid view listing nodes in partition-id order, so seeded sampling is reproducible."""

    def __init__(self, grid: Grid, clients: ClientDirectory) -> None:
        self._grid, self._clients = grid, clients

    def get_node_ids(self) -> list[int]:
        live = set(self._grid.get_node_ids())
        return [n for n in self._clients.nodes_sorted() if n in live]

    def __getattr__(self, name: str):
        return getattr(self._grid, name)


class BouquetStrategy:
    """Mixin: sample with ``random.Random(seed, round)`` over nodes sorted by partition id,
    sort replies by partition id, reject unsound updates (logged with the partition id),
    and hand every client's metrics to the run recorder."""

    has_global_model = True  # replies carry arrays shaped like the global model
    server_evaluates = True  # the server can score the global model on its own data
    weight_key = M.NUM_EXAMPLES  # Flower's weighted_by_key
    weight_range = (0.0, float("inf"))  # bounds of a weight other than num-examples
    nan_weight_ok = False  # a NaN weight is let through (the method falls back)
    extra_records: tuple[str, ...] = ()  # ArrayRecords a train reply carries besides "arrays"

    def __init__(self, *, cfg: RunConfig, clients: ClientDirectory, recorder: RunRecorder, **kwargs) -> None:
        super().__init__(
            fraction_train=cfg.fraction_train,
            fraction_evaluate=cfg.fraction_evaluate,
            min_train_nodes=1,
            min_evaluate_nodes=1,
            min_available_nodes=1,
            weighted_by_key=self.weight_key,
            train_metrics_aggr_fn=aggregate_metric_records,
            evaluate_metrics_aggr_fn=aggregate_metric_records,
            **kwargs,
        )
        self.cfg, self.clients, self.recorder = cfg, clients, recorder
        self.global_arrays: ArrayRecord | None = None
        self._awaiting: dict[str, list[Message]] = {}  # the messages a phase waits on
        self.max_examples: dict[int, float] = {}  # partition id -> its size, where the server knows it
        self.max_examples_total = float("inf")  # every sample of the dataset (bounds the count metrics)
        self.tally = {"train_sound": 0, "train_rejected": 0, "rounds_trained": 0, "rounds": 0}
        self.last_norms: dict[int, float] = {}  # partition id -> update norm, latest round it sent one

    # --- hooks for methods -------------------------------------------------------------
    def extra_problem(self, content: RecordDict) -> str | None:
        """Method-specific checks of a train reply's other records (None = sound)."""
        return None

    def rules(self, pid: int, phase: str) -> ReplyRules:
        """What partition ``pid``'s reply may carry in ``phase`` (evaluate replies: metrics
        only, averaged by num-examples)."""
        inf = float("inf")
        limits = (self.max_examples.get(pid, inf), self.max_examples_total)
        if phase != "train":
            return ReplyRules(frozenset(), *limits)
        return ReplyRules(frozenset({"arrays", *self.extra_records}), *limits, self.weight_key, self.weight_range,
                          self.nan_weight_ok)

    def run_problem(self) -> str | None:
        """Why the finished run did not do its job, or None: no round updated the model, or
        most train replies were rejected (the partitions with the largest updates named)."""
        t = self.tally
        if t["rounds"] and not t["rounds_trained"]:
            return (f"no round had min-replies={self.cfg.min_replies} sound update(s); the model never trained "
                    f"({t['train_rejected']} replies rejected, see summary.json rejected_updates)")
        if t["train_rejected"] > t["train_sound"]:
            largest = sorted(self.last_norms.items(), key=lambda kv: -kv[1])[:3]
            named = ", ".join(f"partition {p} ({n:.3g})" for p, n in largest)
            return (f"{t['train_rejected']} of {t['train_rejected'] + t['train_sound']} train replies were rejected "
                    f"(see summary.json rejected_updates); largest update norms: {named or 'none'}")
        return None

    def round_config(self, server_round: int) -> dict[str, float | int | str]:
        """Per-round values sent to clients next to the arrays: the lr, decayed by ``lr-decay``
        per round (FedKPer's ×0.99 schedule, kept on the server as its StepLR)."""
        return {"lr": self.cfg.learning_rate * self.cfg.lr_decay ** (server_round - 1)}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """What the strategy carries from round to round besides the global arrays (saved in
        every checkpoint; e.g. FedLoG's global synthetic nodes)."""
        return {}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_arrays` when a run resumes."""

    # --- the round loop --------------------------------------------------------------------
    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn=None, *, first_round: int = 1, on_round_end=None):
        """Flower's round loop (train, client evaluate, server evaluate) with two additions:
        it can start at ``first_round`` (resume) and calls ``on_round_end(round, arrays)``
        after every completed round (checkpoint). ``timeout`` closes a round with the
        replies it has; missing nodes are logged in :meth:`_sorted_sound`."""
        train_config = train_config or ConfigRecord()
        evaluate_config = evaluate_config or ConfigRecord()
        arrays = initial_arrays
        if first_round == 1 and evaluate_fn is not None:
            evaluate_fn(0, arrays)
        for rnd in range(first_round, num_rounds + 1):
            log(INFO, "[ROUND %s/%s]", rnd, num_rounds)
            replies = grid.send_and_receive(self.configure_train(rnd, arrays, ConfigRecord(dict(train_config)), grid),
                                            timeout=timeout)
            new_arrays, _ = self.aggregate_train(rnd, replies)
            if new_arrays is not None:
                arrays = new_arrays
            replies = grid.send_and_receive(self.configure_evaluate(rnd, arrays, ConfigRecord(dict(evaluate_config)), grid),
                                            timeout=timeout)
            self.aggregate_evaluate(rnd, replies)
            if evaluate_fn is not None:
                evaluate_fn(rnd, arrays)
            if on_round_end is not None:
                on_round_end(rnd, arrays)
        return arrays

    # --- sampling ------------------------------------------------------------------------
    def _seeded(self, server_round: int, phase: str) -> None:
        random.seed(derive_seed(self.cfg.seed, "sample", phase, server_round))

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.global_arrays = arrays
        for key, value in self.round_config(server_round).items():
            config[key] = value
        self._seeded(server_round, "train")
        self.recorder.round_started(server_round)
        return self._sent("train", super().configure_train(server_round, arrays, config, _SortedGrid(grid, self.clients)))

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self._seeded(server_round, "evaluate")
        return self._sent("evaluate", super().configure_evaluate(server_round, arrays, config, _SortedGrid(grid, self.clients)))

    def _sent(self, phase: str, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        self._awaiting[phase] = messages  # their ids are set when the grid sends them
        return messages

    # --- aggregation ---------------------------------------------------------------------
    def _sorted_sound(self, server_round: int, replies: Iterable[Message], phase: str, reference: ArrayRecord | None) -> list[Message]:
        # A reply names its node as sender, except the SuperLink's own error reply for a node it
        # declared dead (missed heartbeats): that one is matched through reply_to_message_id.
        sent = self._awaiting.pop(phase, [])
        node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in sent}
        by_node: dict[int, Message] = {}
        for msg in replies:
            src = msg.metadata.src_node_id
            node = src if self.clients.pid(src) >= 0 else node_of.get(msg.metadata.reply_to_message_id, src)
            by_node[node] = msg
        for node in sorted({m.metadata.dst_node_id for m in sent} - set(by_node), key=self.clients.pid):
            pid = self.clients.pid(node)
            log(WARNING, "round %d %s: partition %d (node %d) is missing: no reply within round-timeout=%gs",
                server_round, phase, pid, node, self.cfg.round_timeout)
            self.recorder.rejected(server_round, pid, f"{phase}: no reply within {self.cfg.round_timeout:g}s")
        sound = []
        reference_np = None if reference is None else {k: v.numpy() for k, v in reference.items()}  # once a round
        for node, msg in sorted(by_node.items(), key=lambda item: self.clients.pid(item[0])):
            pid = self.clients.pid(node)
            if msg.has_error():
                gone = self.clients.pid(msg.metadata.src_node_id) < 0  # the SuperLink answered for it
                log(WARNING, "round %d %s: partition %d (node %d) %s: %s", server_round, phase, pid, node,
                    "is missing" if gone else "failed", msg.error.reason)
                self.recorder.rejected(server_round, pid, f"{phase} error: {msg.error.reason}")
                continue
            problem = reply_problem(msg.content, reference, self.rules(pid, phase))
            if problem is None and phase == "train":
                try:
                    problem = self.extra_problem(msg.content)
                except Exception as exc:  # noqa: BLE001 (a forged record must not crash the round)
                    problem = f"malformed reply ({type(exc).__name__}: {exc})"
            if problem is not None:
                log(WARNING, "round %d %s: rejected reply from partition %d: %s", server_round, phase, pid, problem)
                self.recorder.rejected(server_round, pid, problem)
                self.tally["train_rejected"] += phase == "train"
                continue
            self.tally["train_sound"] += phase == "train"
            if phase == "train" and reference is not None:
                self._bound_update(server_round, pid, msg.content, reference_np)
            metrics = dict(msg.content["metrics"])
            if phase != "train":  # sizes were recorded with the training reply
                metrics = {k: v for k, v in metrics.items() if not k.startswith(M.NUM_EXAMPLES)}
            self.recorder.client_metrics(server_round, pid, metrics)
            sound.append(msg)
        return sound

    def _bound_update(self, server_round: int, pid: int, content: RecordDict, reference: dict[str, np.ndarray]) -> None:
        """Record the update's L2 norm (server-side, per partition) and clip it to
        ``max-update-norm`` when that is set."""
        arrays = {k: v.numpy() for k, v in content["arrays"].items()}
        clipped, norm = clip_update(arrays, reference, self.cfg.max_update_norm)
        self.last_norms[pid] = norm
        self.recorder.client_metrics(server_round, pid, {M.UPDATE_NORM: norm})
        if clipped is not arrays:
            log(INFO, "round %d: update of partition %d clipped from norm %.4g to max-update-norm=%g",
                server_round, pid, norm, self.cfg.max_update_norm)
            content["arrays"] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in clipped.items()})

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        reference = self.global_arrays if self.has_global_model else None
        sound = self._sorted_sound(server_round, replies, "train", reference)
        self.tally["rounds"] += 1
        if len(sound) < self.cfg.min_replies:
            log(WARNING, "round %d: %d sound update(s), fewer than min-replies=%d; the global model stays as it was",
                server_round, len(sound), self.cfg.min_replies)
            return None, None
        try:
            arrays, metrics = self._aggregate_sound(server_round, sound)
        except Exception as exc:  # noqa: BLE001 (validated replies should not get here; never crash a round)
            log(WARNING, "round %d: aggregation failed (%s: %s); the global model stays as it was",
                server_round, type(exc).__name__, exc)
            return None, None
        if arrays is not None and not all(np.all(np.isfinite(v.numpy())) for v in arrays.values()):
            log(WARNING, "round %d: the aggregate is not finite; the global model stays as it was", server_round)
            return None, None
        self.tally["rounds_trained"] += 1
        if metrics is not None:
            self.recorder.server_metrics(server_round, dict(metrics))
        return arrays, metrics

    def _aggregate_sound(self, server_round: int, sound: list[Message], weight_key: str | None = None
                         ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower's weighted mean of the arrays; metrics by Bouquet's mean, which (unlike
        Flower's consistency check) accepts replies with different metric keys, e.g. local
        flip rates that only returning clients have."""
        key = weight_key or self.weight_key
        contents = [m.content for m in sound]
        if not self.has_global_model:
            arrays = None
        elif self.cfg.aggregator == "mean":
            arrays = aggregate_arrayrecords(contents, key)
        else:  # unweighted, coordinate-wise (Flower's FedMedian / FedTrimmedAvg rule)
            arrays = robust_aggregate([c["arrays"] for c in contents], self.cfg.aggregator, self.cfg.trim_fraction)
        return arrays, aggregate_metric_records(contents, key)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        sound = self._sorted_sound(server_round, replies, "evaluate", None)
        metrics = aggregate_metric_records([m.content for m in sound], M.NUM_EXAMPLES) if sound else None
        if metrics is not None:
            self.recorder.server_metrics(server_round, dict(metrics))
        return metrics
