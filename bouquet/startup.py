"""Start-up work without the garbage collector walking it over and over.

A simulation process or Ray actor imports torch, flwr and Ray and decodes a dataset: hundreds of
thousands of objects that live as long as the process. While they are being made, every few
thousand allocations trigger a collection, and the full ones walk everything made so far (measured
with ``gc.callbacks`` in one Fashion-MNIST run: 1.2 s of collections in the simulation process and
1.9 / 2.5 s in each of the two actors, most of it before round 1). ``no_collections`` pauses the
collector for such work, then freezes what it built (``gc.freeze``: later collections skip it;
Python's documented pattern for long-lived start-up state), and restores it as it was. The pause
is for the whole process (the collector is global): other threads allocate little meanwhile, and
cyclic garbage they hold at the freeze is never collected, once per process. In one bench run this
changed no wall-clock ratio (README, Benchmark): it saves CPU, not time on the critical path.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_collections() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
