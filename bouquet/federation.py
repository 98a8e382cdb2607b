"""Who is in the federation: map Flower node ids to stable partition ids.

Node ids are random per run and replies arrive in completion order, so everything that must
be reproducible (sampling, aggregation order, metrics rows) is keyed by partition id. The
server learns the mapping with one QUERY message per node before round 1.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO, WARNING

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from bouquet.metrics import PARTITION_ID

NUM_PARTITIONS = "num-partitions"
MAX_PARTITIONS = 10_000_000  # a larger claimed federation is malformed


PULL_FUNCTIONS = "flwr.supercore.inflatable.inflatable_utils"  # pull_objects and its tree variant (flwr pinned)


def object_pull_defaults(most_s: float) -> dict[str, float | int]:
    """flwr's waits for a message's objects that have not arrived yet, capped at ``most_s``.

    flwr 1.41 hands a message on before its objects (the model) have arrived: a SuperNode stores
    the message, then pulls its objects from the SuperLink, while its ClientApp already asks for
    them; the ServerApp's grid pulls replies the same way. A pull that finds an object missing waits
    1 s, then 2, 4, up to 10 s (``PULL_INITIAL_BACKOFF``, ``PULL_BACKOFF_CAP``), so a model that
    arrives 50 ms late costs a second or three. Here the wait starts at ``most_s / 4`` and doubles up
    to ``most_s`` (at most Flower's 10 s); the number of tries grows so that an object that never
    comes is given up after as long as Flower gives it (500 tries at its 10 s cap, about 83 min;
    ``max_time``, 2 h, still bounds every pull)."""
    from flwr.supercore.constant import PULL_BACKOFF_CAP, PULL_MAX_TRIES_PER_OBJECT  # noqa: PLC0415

    if not most_s > 0:  # also NaN
        raise ValueError(f"most_s={most_s}: expected seconds > 0")
    most_s = min(most_s, PULL_BACKOFF_CAP)
    return {"initial_backoff": most_s / 4, "backoff_cap": most_s,
            "max_tries_per_object": math.ceil(PULL_MAX_TRIES_PER_OBJECT * PULL_BACKOFF_CAP / most_s)}


def cap_object_pulls(most_s: float) -> None:
    """In this process, flwr's pulls of a message's objects wait as ``object_pull_defaults`` says.
    Only the defaults change: a caller that passes its own backoff keeps it."""
    import importlib  # noqa: PLC0415

    utils = importlib.import_module(PULL_FUNCTIONS)
    defaults = object_pull_defaults(most_s)
    for fn in (utils.pull_objects, utils.pull_and_inflate_object_from_tree):
        if not set(defaults) <= set(fn.__kwdefaults__ or {}):
            raise RuntimeError(f"{PULL_FUNCTIONS}.{fn.__name__} has no backoff defaults: this flwr is not the pinned one")
        fn.__kwdefaults__.update(defaults)


class PromptGrid:
    """A Grid whose ``send_and_receive`` notices replies within ``most_s`` of their arrival.

    Flower 1.41's ``HttpGrid`` (the ServerApp's grid in deployment) sleeps 3 s between pulls, so every
    exchange -- the partition query, each round's train and evaluate -- ends on the next multiple of
    3 s after its last reply; its ``InMemoryGrid`` (simulation) sleeps 0.1 s. Here the wait starts at
    ``first_s`` and doubles up to ``most_s`` (the ServerApp also caps its waits for a reply's
    objects: ``cap_object_pulls``). Measured (README, Benchmark): about 0.4 s a round
    faster in simulation in two of three runs, nothing measurable in deployment (the SuperNodes' own
    3 s cycle remains), and a 0.02 s cap was slower (the polls share the simulation process with
    Flower's engine). Same contract as Flower's: push, pull until every message is answered or
    ``timeout`` passes, return what arrived."""

    def __init__(self, grid: Grid, *, first_s: float = 0.005, most_s: float = 0.1) -> None:
        if not 0 < first_s <= most_s:
            raise ValueError(f"need 0 < first_s <= most_s, got {first_s}, {most_s}")
        self._grid, self.first_s, self.most_s = grid, first_s, most_s

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        waiting = set(self._grid.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        delay = self.first_s
        while waiting:
            got = list(self._grid.pull_messages(waiting))
            replies += got
            waiting -= {m.metadata.reply_to_message_id for m in got}
            left = math.inf if end is None else end - time.monotonic()
            if not waiting or left <= 0:
                break
            time.sleep(min(delay, left))
            delay = min(2 * delay, self.most_s)
        return replies

    def __getattr__(self, name: str):
        return getattr(self._grid, name)


@dataclass(frozen=True)
class ClientDirectory:
    """node id -> partition id for every connected node, plus the federation size."""

    partition_of: dict[int, int]
    num_partitions: int

    def nodes_sorted(self) -> list[int]:
        return sorted(self.partition_of, key=self.partition_of.__getitem__)

    def pid(self, node_id: int) -> int:
        return self.partition_of.get(node_id, -1)


def discover_clients(grid: Grid, *, expected: int = 0, wait_s: float = 600.0, timeout_s: float = 600.0
                     ) -> ClientDirectory:
    """Ask every node for its partition id; wait until all ``num-partitions`` are connected.

    A node is a participant, not trusted: one whose answer fails or is malformed is left out,
    the federation size is ``expected`` (the operator's ``federation-size``) or else what a strict
    majority of the answering nodes says (a tie is no answer: a node claiming a smaller federation
    that answers first must not make the others' partitions disappear), and a partition id claimed
    by two nodes is given to neither (logged with both node ids); the others go on."""
    claims: dict[int, tuple[int, int] | None] = {}  # node -> (partition id, num-partitions); None: no usable answer
    deadline = time.monotonic() + wait_s
    while True:
        new = [n for n in grid.get_node_ids() if n not in claims]
        if new:
            msgs = [
                Message(RecordDict({"config": ConfigRecord({"ask": PARTITION_ID})}),
                        message_type=MessageType.QUERY, dst_node_id=n)
                for n in new
            ]
            for reply in grid.send_and_receive(msgs, timeout=timeout_s):
                claims[reply.metadata.src_node_id] = _claim(reply)
        directory = _directory(claims, expected)
        if directory is not None and set(range(directory.num_partitions)) <= _claimed(claims):
            break
        if time.monotonic() > deadline:
            break
        log(INFO, "waiting for nodes: %d connected", len(claims))
        time.sleep(1.0)
    directory = _directory(claims, expected, report=True)
    sizes = sorted(Counter(c[1] for c in claims.values() if c is not None).items())
    if directory is None and sizes:
        raise RuntimeError(f"the SuperNodes disagree on num-partitions (size: nodes claiming it {sizes}; "
                           f"{len(claims)} answered) and no strict majority decides; set federation-size in the run config")
    if directory is None or not directory.partition_of:
        raise RuntimeError(f"no SuperNode gave a usable partition id ({len(claims)} answered"
                           + (f", federation-size={expected})" if expected else ")"))
    log(INFO, "federation: %d clients (partition ids %s)", len(directory.partition_of),
        sorted(directory.partition_of.values()))
    return directory


def _claim(reply: Message) -> tuple[int, int] | None:
    if reply.has_error():
        log(WARNING, "node %d failed the partition query: %s", reply.metadata.src_node_id, reply.error.reason)
        return None
    try:
        m = reply.content["metrics"]
        pid, n = m[PARTITION_ID], m[NUM_PARTITIONS]
        if isinstance(pid, int | float) and isinstance(n, int | float) and float(pid).is_integer() and \
                float(n).is_integer() and 0 <= pid < n <= MAX_PARTITIONS:
            return int(pid), int(n)
    except (KeyError, TypeError, ValueError):
        pass
    log(WARNING, "node %d gave a malformed partition answer; it is left out", reply.metadata.src_node_id)
    return None


def _claimed(claims: dict[int, tuple[int, int] | None]) -> set[int]:
    return {c[0] for c in claims.values() if c is not None}


def _directory(claims: dict[int, tuple[int, int] | None], expected: int = 0, report: bool = False
               ) -> ClientDirectory | None:
    """The federation of ``expected`` partitions (else the size a strict majority claims; None
    while there is none), each partition id held by exactly one node."""
    sizes = Counter(c[1] for c in claims.values() if c is not None)
    if expected:
        size = expected
    elif not sizes or 2 * sizes.most_common(1)[0][1] <= sizes.total():
        return None
    else:
        size = sizes.most_common(1)[0][0]
    holders: dict[int, list[int]] = {}
    for node, claim in sorted(claims.items()):
        if claim is not None and claim[1] == size:
            holders.setdefault(claim[0], []).append(node)
        elif claim is not None and report:
            log(WARNING, "node %d claims num-partitions=%d, the others %d; it is left out", node, claim[1], size)
    for pid, nodes in holders.items():
        if len(nodes) > 1 and report:
            log(WARNING, "partition %d is claimed by nodes %s; none of them takes part", pid, nodes)
    return ClientDirectory({nodes[0]: pid for pid, nodes in holders.items() if len(nodes) == 1}, size)
