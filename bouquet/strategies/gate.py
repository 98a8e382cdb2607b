"""Bouquet's side of every round, around *any* Flower strategy (a Bouquet method, a plain
Flower ``FedAvg``, or either wrapped in Flower's DP wrappers): nodes listed in partition-id
order, replies screened (``bouquet.strategies.replies``), sorted, clipped to the update bound,
recorded, and a tally of what was accepted, so the strategy only ever aggregates sound replies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from bouquet import metrics as M
from bouquet.federation import ClientDirectory
from bouquet.records import to_record
from bouquet.strategies.replies import clip_update, reply_problem


class SortedGrid:
    """A Grid view listing nodes in partition-id order (seeded sampling is then reproducible),
    optionally only ``only`` (a Poisson-sampled cohort)."""

    def __init__(self, grid: Grid, clients: ClientDirectory, only: Iterable[int] | None = None) -> None:
        self._grid, self._clients = grid, clients
        self._only = None if only is None else set(only)

    def get_node_ids(self) -> Sequence[int]:
        nodes = self._clients.nodes_sorted()
        if isinstance(nodes, range):  # logical clients (bouquet.multiplex): all of them, never materialised
            return nodes if self._only is None else sorted(n for n in self._only if n in nodes)
        live = set(self._grid.get_node_ids())
        return [n for n in nodes if n in live and (self._only is None or n in self._only)]

    def restricted(self, only: Iterable[int]) -> SortedGrid:
        return SortedGrid(self._grid, self._clients, only)

    def __getattr__(self, name: str):
        return getattr(self._grid, name)


class ReplyGate:
    """Screens the replies of one run. ``hooks`` is the Bouquet strategy whose rules apply
    (whatever wraps it); ``update_bound`` (L2, 0 = none) clips every sound train update."""

    def __init__(self, hooks) -> None:
        self.hooks = hooks
        self.update_bound = hooks.cfg.max_update_norm
        self.freeze_integer = False  # DP: integer arrays (counters) keep the global value, outside the clip
        self.tally = {"train_sound": 0, "train_rejected": 0, "rounds_trained": 0, "rounds": 0, "rounds_failed": 0}
        self.last_norms: dict[int, float] = {}  # partition id -> update norm, latest round it sent one
        self._awaiting: dict[str, list[Message]] = {}

    cfg = property(lambda self: self.hooks.cfg)
    clients = property(lambda self: self.hooks.clients)
    recorder = property(lambda self: self.hooks.recorder)

    def view(self, grid: Grid) -> SortedGrid:
        return SortedGrid(grid, self.clients)

    def sent(self, phase: str, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        self._awaiting[phase] = messages  # their ids are set when the grid sends them
        return messages

    def screen(self, server_round: int, replies: Iterable[Message], phase: str, reference: ArrayRecord | None
               ) -> list[Message]:
        """The sound replies in partition-id order; every other one is logged and recorded with
        its partition id. Each sound reply's full metrics are recorded here; the strategy gets
        only the metric keys every sound reply shares (Flower's FedAvg requires equal keys)."""
        # A reply names its node as sender, except the SuperLink's own error reply for a node it
        # declared dead (missed heartbeats): that one is matched through reply_to_message_id.
        sent = self._awaiting.pop(phase, [])
        node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in sent}
        expected = {m.metadata.dst_node_id for m in sent}
        by_node: dict[int, Message] = {}
        for msg in replies:
            src = msg.metadata.src_node_id
            node = src if self.clients.pid(src) >= 0 else node_of.get(msg.metadata.reply_to_message_id, src)
            # Flower's SuperLink already refuses both; checked again so that no grid can slip one in
            unasked = bool(sent) and node not in expected
            if unasked or node in by_node:
                pid = self.clients.pid(node)
                why = "a reply from a node that was not asked" if unasked else "a second reply from the same node"
                log(WARNING, "round %d %s: rejected %s (partition %d, node %d)", server_round, phase, why, pid, node)
                self.recorder.rejected(server_round, pid, f"{phase}: {why}")
                continue
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
            problem = self._problem(msg.content, reference, pid, phase)
            if problem is None and phase == "train" and reference_np is not None:
                try:
                    self._bound_update(server_round, pid, msg.content, reference_np)
                except Exception as exc:  # noqa: BLE001 (checked replies cannot get here; never crash a round)
                    problem = f"malformed update ({type(exc).__name__}: {exc})"
            if problem is not None:
                log(WARNING, "round %d %s: rejected reply from partition %d: %s", server_round, phase, pid, problem)
                self.recorder.rejected(server_round, pid, problem)
                self.tally["train_rejected"] += phase == "train"
                continue
            self.tally["train_sound"] += phase == "train"
            metrics = dict(msg.content["metrics"])
            if phase != "train":  # sizes were recorded with the training reply
                metrics = {k: v for k, v in metrics.items() if not k.startswith(M.NUM_EXAMPLES)}
            self.recorder.client_metrics(server_round, pid, metrics)
            sound.append(msg)
        if sound:  # the weighted mean of everything sent (weights by size), one row per round and phase
            rows = [dict(m.content["metrics"]) for m in sound]
            self.recorder.server_metrics(server_round, M.weighted_mean(rows, M.NUM_EXAMPLES))
            common = set.intersection(*(set(m.content["metrics"].keys()) for m in sound))
            for msg in sound:
                msg.content["metrics"] = MetricRecord({k: v for k, v in msg.content["metrics"].items() if k in common})
        return sound

    def _problem(self, content: RecordDict, reference: ArrayRecord | None, pid: int, phase: str) -> str | None:
        problem = reply_problem(content, reference, self.hooks.rules(pid, phase))
        if problem is None and phase == "train":
            try:
                problem = self.hooks.extra_problem(content) or self.hooks.partition_problem(pid, content)
            except Exception as exc:  # noqa: BLE001 (a forged record must not crash the round)
                problem = f"malformed reply ({type(exc).__name__}: {exc})"
        return problem

    def _bound_update(self, server_round: int, pid: int, content: RecordDict, reference: dict[str, np.ndarray]) -> None:
        """Record the update's L2 norm (server-side, per partition) and clip it to
        ``update_bound``. A method whose replies are themselves updates (ELS's gradient sums)
        is measured against zero."""
        arrays = {k: v.numpy() for k, v in content["arrays"].items()}
        if not self.hooks.replies_are_models:
            reference = {k: np.zeros_like(v) for k, v in reference.items()}
        if self.freeze_integer:
            frozen = {k: reference[k] for k, v in arrays.items() if not np.issubdtype(v.dtype, np.floating)}
            if any(not np.array_equal(arrays[k], v) for k, v in frozen.items()):
                arrays = {**arrays, **frozen}
                content["arrays"] = to_record(arrays)
        clipped, norm = clip_update(arrays, reference, self.update_bound)
        self.last_norms[pid] = norm
        self.recorder.client_metrics(server_round, pid, {M.UPDATE_NORM: norm})
        if clipped is not arrays:
            log(INFO, "round %d: update of partition %d clipped from norm %.4g to %g",
                server_round, pid, norm, self.update_bound)
            content["arrays"] = to_record(clipped)

    def run_problem(self) -> str | None:
        """Why the finished run did not do its job, or None: no round updated the model, most
        rounds left it as it was (too few sound replies, a failed or non-finite aggregate), or
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
        if t["rounds"] - t["rounds_trained"] > t["rounds_trained"]:
            return (f"the global model changed in only {t['rounds_trained']} of {t['rounds']} rounds (too few sound "
                    f"replies for min-replies={self.cfg.min_replies}, or an aggregate that failed or was not finite "
                    f"in {t['rounds_failed']}; see the log)")
        return None
