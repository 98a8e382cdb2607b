"""Many logical clients on few SuperNodes (simulation): ``num-clients`` is the population,
the SuperNodes are workers.

The strategy, the reply gate and the recorder see one *virtual node* per logical client (node
id = client id + 1, :class:`LogicalDirectory`), so sampling, screening, aggregation and metrics
are exactly those of one SuperNode per client. :class:`MultiplexGrid` packs the messages of
one phase into one message per live worker (records shared by several clients, such as the
global model, travel once) and unpacks each worker's reply into one reply per client; a client
whose work failed, or that a worker left out, is an error or a missing reply for that client
alone. The worker side (``bouquet.client_app``) runs each client with a fresh ``Context`` whose
state comes from the store keyed by client id (``bouquet.client_state``), so a client may be
served by a different SuperNode every round. A deployed SuperNode is one institution: a
SuperNode with its own ``data-path`` refuses batches.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from logging import WARNING

from flwr.app import ConfigRecord, Error, Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from bouquet.federation import ClientDirectory

MUX = "bouquet-mux"  # the ConfigRecord naming a batch's clients (request) and their errors (reply)
CIDS, RECORDS, ERRORS = "cids", "records", "errors"
MALFORMED = 7001  # Error code for a client whose part of a batch reply is unusable
_ids = itertools.count()


class LogicalDirectory:
    """The population 0..N-1 as virtual node ids 1..N, never materialised (a million is a range)."""

    def __init__(self, num_clients: int, workers: ClientDirectory) -> None:
        self.num_partitions, self.workers = num_clients, workers

    def nodes_sorted(self) -> range:
        return range(1, self.num_partitions + 1)

    def pid(self, node_id: int) -> int:
        return node_id - 1 if 1 <= node_id <= self.num_partitions else -1

    def node(self, pid: int) -> int:
        return pid + 1


def assign(pids: list[int], workers: list[int], server_round: int) -> dict[int, list[int]]:
    """Sorted client ids dealt round-robin over the workers, rotated by the round: balanced
    batches, and a client moves between SuperNodes (its state is not tied to one)."""
    out: dict[int, list[int]] = {w: [] for w in workers}
    for i, pid in enumerate(sorted(pids)):
        out[workers[(i + server_round) % len(workers)]].append(pid)
    return {w: batch for w, batch in out.items() if batch}


def pack(contents: list[tuple[int, RecordDict]]) -> RecordDict:
    """One RecordDict for (client id, content) pairs; a record object shared by several
    contents (Flower puts the same global ArrayRecord in every message) is stored once."""
    out, pool, names = RecordDict(), {}, []
    for _, content in contents:
        refs = []
        for name, record in content.items():
            key = pool.get(id(record))
            if key is None:
                key = pool[id(record)] = f"p{len(pool)}"
                out[key] = record
            refs.append(f"{name}={key}")
        names.append(";".join(refs))
    out[MUX] = ConfigRecord({CIDS: [cid for cid, _ in contents], RECORDS: names})
    return out


def unpack(content: RecordDict) -> list[tuple[int, RecordDict]]:
    """The (client id, content) pairs of a packed request (worker side); ValueError if malformed."""
    mux = content[MUX]
    cids, names = list(mux[CIDS]), list(mux[RECORDS])
    if len(cids) != len(names):
        raise ValueError("a batch names a different number of clients and record lists")
    out = []
    for cid, refs in zip(cids, names):
        parts = RecordDict()
        for ref in filter(None, str(refs).split(";")):
            name, _, key = ref.partition("=")
            parts[name] = content[key]
        out.append((int(cid), parts))
    return out


def pack_replies(replies: list[tuple[int, RecordDict | None, str]]) -> RecordDict:
    """Worker side: (client id, reply content or None, error text) -> one reply content."""
    out = RecordDict()
    for cid, content, _ in replies:
        for name, record in (content or RecordDict()).items():
            out[f"{cid}:{name}"] = record
    out[MUX] = ConfigRecord({CIDS: [cid for cid, _, _ in replies], ERRORS: [err for _, _, err in replies]})
    return out


def split_replies(content: RecordDict, expected: Iterable[int]) -> dict[int, RecordDict | str]:
    """Server side: each expected client's reply content, or the error text for it. A client
    the worker did not answer for is absent (the gate logs it as missing); records for clients
    that were not in the batch are ignored; a malformed batch makes every client an error."""
    expected = set(expected)
    try:
        mux = content[MUX]
        cids, errors = [int(c) for c in mux[CIDS]], [str(e) for e in mux[ERRORS]]
        if len(cids) != len(errors):
            raise ValueError("client and error lists differ in length")
    except (KeyError, TypeError, ValueError) as exc:
        return {cid: f"malformed batch reply ({type(exc).__name__}: {exc})" for cid in expected}
    out: dict[int, RecordDict | str] = {}
    for cid, err in zip(cids, errors):
        if cid in expected:
            out[cid] = err if err else RecordDict()
    for key, record in content.items():
        cid_text, sep, name = key.partition(":")
        if sep and cid_text.lstrip("-").isdigit() and isinstance(out.get(int(cid_text)), RecordDict):
            out[int(cid_text)][name] = record
    return out


class MultiplexGrid:
    """A Grid whose nodes are the logical clients (``directory``), served by the live workers."""

    def __init__(self, grid: Grid, directory: LogicalDirectory) -> None:
        self._grid, self.directory = grid, directory

    def get_node_ids(self) -> range:
        return self.directory.nodes_sorted()

    def live_workers(self) -> list[int]:
        live = set(self._grid.get_node_ids())
        return [n for n in self.directory.workers.nodes_sorted() if n in live]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterator[Message]:
        messages = list(messages)
        if not messages:
            return iter(())
        by_pid: dict[int, Message] = {}
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = f"bouquet-mux-{next(_ids)}"  # as Flower's grid does on push
            by_pid[self.directory.pid(msg.metadata.dst_node_id)] = msg
        workers = self.live_workers()
        if not workers:
            return iter(_error(m, "no live SuperNode to run this client") for m in messages)
        server_round = int(messages[0].content["config"].get("server-round", 0)) if "config" in messages[0].content else 0
        batches = assign(list(by_pid), workers, server_round)
        packed = {}
        for worker, pids in batches.items():
            out = Message(pack([(pid, by_pid[pid].content) for pid in pids]), dst_node_id=worker,
                          message_type=messages[0].metadata.message_type, group_id=messages[0].metadata.group_id)
            packed[worker] = (out, pids)
        replies: list[Message] = []
        answered: set[int] = set()
        for reply in self._grid.send_and_receive([m for m, _ in packed.values()], timeout=timeout):
            worker = _worker_of(reply, packed)
            if worker is None or worker in answered:
                continue
            answered.add(worker)
            pids = packed[worker][1]
            if reply.has_error():
                replies += [_error(by_pid[p], f"SuperNode {worker} failed: {reply.error.reason}") for p in pids]
                continue
            for pid, part in split_replies(reply.content, pids).items():
                replies.append(_error(by_pid[pid], part) if isinstance(part, str) else Message(part, reply_to=by_pid[pid]))
        for worker in set(packed) - answered:
            log(WARNING, "SuperNode %d did not answer for clients %s", worker, packed[worker][1])
        return iter(replies)

    def __getattr__(self, name: str):
        return getattr(self._grid, name)


def _worker_of(reply: Message, packed: dict[int, tuple[Message, list[int]]]) -> int | None:
    for worker, (out, _) in packed.items():
        if reply.metadata.reply_to_message_id == out.metadata.message_id or \
                (reply.metadata.src_node_id == worker and not reply.has_error()):
            return worker
    return None


def _error(msg: Message, reason: str) -> Message:
    return Message(Error(code=MALFORMED, reason=reason), reply_to=msg)
