"""Flower's SuperNode with a shorter idle wait: the node side of ``bouquet deploy-local``.

flwr 1.41's SuperNode loop (``start_client_internal``) asks the SuperLink for a message, and when
there is none sleeps a hard-coded 3 s before asking again; once it has handed a message to its
ClientApp it checks for the reply every 0.5 s. A round of train + evaluate therefore waits about
3 s (two phases, 1.5 s each on average) plus up to 1 s doing nothing; and when it pulls a
message's objects from the SuperLink before they are all there, it waits 1 s, 2 s, ... before
trying again. This runs Flower's own ``flower-supernode`` command with all three waits capped at
``--idle-poll`` seconds (default 0.2; ``bouquet.federation.cap_object_pulls``): the loop, the
protocol and every flag are Flower's. The price is polling: one request every
``--idle-poll`` seconds per idle node instead of every 3 s, fine on loopback; an institution
connecting to a remote SuperLink keeps Flower's command (``--idle-poll 3`` restores Flower's idle waits;
its waits for objects then run 0.75 s to 3 s instead of Flower's 1 s to 10 s).

    python -m bouquet.deploy.supernode [--idle-poll S] <flower-supernode arguments>
"""

from __future__ import annotations

import importlib
import sys
import time as _time
from types import SimpleNamespace

from bouquet.federation import cap_object_pulls

NODE_LOOP = "flwr.supernode.start_client_internal"  # its module-level ``time`` is replaced (flwr pinned)
DEFAULT_POLL_S = 0.2


def capped_clock(most_s: float) -> SimpleNamespace:
    """The ``time`` module as the node loop sees it: every sleep at most ``most_s`` seconds."""
    clock = SimpleNamespace(**{k: getattr(_time, k) for k in dir(_time) if not k.startswith("_")})
    clock.sleep = lambda seconds: _time.sleep(min(seconds, most_s))
    return clock


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    poll = DEFAULT_POLL_S
    if args[:1] == ["--idle-poll"]:
        poll = float(args[1])
        if not 0 < poll <= 60:
            sys.exit(f"--idle-poll {poll:g}: expected seconds in (0, 60]")
        args = args[2:]
    loop = importlib.import_module(NODE_LOOP)
    if not hasattr(loop, "time") or not hasattr(loop, "start_client_internal"):
        sys.exit(f"{NODE_LOOP} has no module-level time/start_client_internal: this flwr is not the pinned one")
    loop.time = capped_clock(poll)
    cap_object_pulls(poll)  # the SuperNode's pulls of a message's objects from the SuperLink
    from flwr.supernode.cli import flower_supernode  # noqa: PLC0415

    sys.argv = ["flower-supernode", *args]
    sys.exit(flower_supernode())


if __name__ == "__main__":
    main()
