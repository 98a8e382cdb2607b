"""Client state on the node's own disk, so that a resumed run continues it.

Flower keeps ``Context.state`` per run: a run resumed with ``resume-from`` is a new run, and
without this its clients would restart their memories (local flip rates, BWT references),
FedLoG's synthetic nodes, Ditto's personal and ``local``'s models. After every message a
client writes a snapshot of its records, named by the round; the server tells every message
which experiment it belongs to (``state-key``: the run folder's name, the same after a resume)
and after which round it resumed (``resumed-after``). The first message a client handles in
a resumed run restores its newest snapshot of a round no later than that one, so state from a
round that the server never completed is not used.

Where: node-config ``state-dir`` (an institution's own writable folder), else
``<output root>/<state-key>/client-state`` (the run folder: simulation and one-machine
deployments). Only the two newest rounds are kept per client: a server checkpoint is at most
one round behind what a client has seen.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

Arrays = dict[str, np.ndarray]
STATE_KEY, RESUMED_AFTER, SESSION = "state-key", "resumed-after", "session"  # session: the Flower run id
KEEP = 2
_SNAPSHOT = re.compile(r"r(\d+)\.npz")
_SEP = "|"  # record name | array name (array names may contain dots and slashes)
_SESSION = f"{_SEP}session"  # no record is named "": the run that wrote the snapshot


_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")  # one plain folder name: no "..", no "/", not absolute


def folder(state_dir: str, output_root: Path, state_key: str, cid: int) -> Path:
    """The node's snapshot folder for experiment ``state_key`` (sent by the server, so checked to
    be one plain name: it must not lead the node to write or delete outside its ``state-dir``)."""
    if not _KEY.fullmatch(state_key) or ".." in state_key:
        raise ValueError(f"state-key {state_key[:80]!r} is not a plain folder name")
    base = Path(state_dir).expanduser() / state_key if state_dir else output_root / state_key / "client-state"
    return base / f"client-{cid}"


def _snapshots(where: Path) -> dict[int, Path]:
    if not where.is_dir():
        return {}
    return {int(m.group(1)): p for p in where.iterdir() if (m := _SNAPSHOT.fullmatch(p.name))}


def save(where: Path, server_round: int, records: dict[str, Arrays], session: int = 0) -> None:
    """Write this round's snapshot (atomically: a kill mid-write keeps the older ones), marked
    with the run (``session``) that wrote it."""
    where.mkdir(parents=True, exist_ok=True)
    flat = {f"{name}{_SEP}{k}": v for name, arrays in records.items() for k, v in arrays.items()}
    flat[_SESSION] = np.asarray(session, dtype=np.uint64)  # Flower run ids are unsigned 64-bit
    target = where / f"r{server_round:05d}.npz"
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("wb") as f:
        np.savez(f, **flat)
    os.replace(tmp, target)
    for rnd in sorted(_snapshots(where))[:-KEEP]:
        _snapshots(where)[rnd].unlink(missing_ok=True)


def load(where: Path, up_to_round: int) -> tuple[int, dict[str, Arrays]] | None:
    """The newest snapshot of a round ≤ ``up_to_round`` as (round, records), or None."""
    usable = [r for r in _snapshots(where) if r <= up_to_round]
    if not usable:
        return None
    rnd = max(usable)
    return rnd, _read(where / f"r{rnd:05d}.npz")[1]


def _read(path: Path) -> tuple[int, dict[str, Arrays]]:
    records: dict[str, Arrays] = {}
    with np.load(path, allow_pickle=False) as z:
        session = int(z[_SESSION]) if _SESSION in z.files else 0
        for flat in z.files:
            name, _, key = flat.partition(_SEP)
            if flat != _SESSION:
                records.setdefault(name, {})[key] = z[flat]
    return session, records


def load_current(where: Path, server_round: int, resumed_after: int, session: int) -> dict[str, Arrays]:
    """A logical client's records as this run left them (``bouquet.multiplex``: any SuperNode
    may serve it): its newest snapshot of a round ≤ ``server_round`` that is either from the
    checkpointed part of the run (≤ ``resumed_after``) or written by this very run; snapshots
    of rounds a crashed run never completed are skipped. {} for a client never seen."""
    for rnd in sorted((r for r in _snapshots(where) if r <= server_round), reverse=True):
        try:
            written_by, records = _read(where / f"r{rnd:05d}.npz")
        except FileNotFoundError:  # pruned by a newer save meanwhile
            continue
        if rnd <= resumed_after or written_by == session:
            return records
    return {}
