"""Bouquet's ServerApp and ClientApp wired together in one process, without Ray or a SuperLink:
a Grid that hands each message to the ClientApp function for its type on that node's own
Context. For tests of what Bouquet does with messages (multiplexing, state, screening), fast
enough to run every registered method."""

from __future__ import annotations

import itertools
from pathlib import Path

from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from bouquet import client_app as ca
from bouquet import server_app as sa
from bouquet.config import RunConfig

_HANDLERS = {MessageType.QUERY: ca.query, MessageType.TRAIN: ca.train, MessageType.EVALUATE: ca.evaluate}


class InProcessGrid:
    """``num_supernodes`` nodes (ids 101, 102, ...) with partition ids 0.. in their node config."""

    def __init__(self, num_supernodes: int, run_config: dict, run_id: int = 2**63 + 7) -> None:
        self.contexts = {101 + i: Context(run_id=run_id, node_id=101 + i,
                                          node_config={"partition-id": i, "num-partitions": num_supernodes},
                                          state=RecordDict(), run_config=dict(run_config))
                         for i in range(num_supernodes)}
        self._ids = itertools.count()
        self.sent: list[Message] = []  # every message this grid carried (tests inspect batches)

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = f"m{next(self._ids)}"
            self.sent.append(msg)
            try:
                reply = _HANDLERS[msg.metadata.message_type](msg, self.contexts[msg.metadata.dst_node_id])
            except Exception as exc:  # noqa: BLE001 (as Flower does: the ClientApp's exception is an error reply)
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            replies.append(reply)
        return replies


def run_in_process(out_dir: Path, num_supernodes: int, run_id: int = 2**63 + 7, **overrides) -> tuple[Path, InProcessGrid]:
    """One run of the real ServerApp logic; returns (run folder, grid)."""
    config = {"output-dir": str(out_dir), **overrides}
    grid = InProcessGrid(num_supernodes, config, run_id)
    saved = {k: getattr(TaskIdentity, f"_{k}") for k in ("run_id", "node_id", "task_id")}
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 1, 1  # what a ServerApp process has
    try:
        sa.run(grid, RunConfig.from_run_config(config), run_id)
    finally:
        for k, v in saved.items():
            setattr(TaskIdentity, f"_{k}", v)
    return _newest(out_dir), grid


def _newest(out_dir: Path) -> Path:
    return max((p.parent for p in out_dir.glob("*/summary.json")), key=lambda p: p.stat().st_mtime)
