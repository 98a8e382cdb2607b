"""bouquet.startup: start-up work runs without collections and is frozen afterwards."""

from __future__ import annotations

import gc

import pytest

from bouquet.startup import no_collections


@pytest.fixture(autouse=True)
def restore_gc():
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    (gc.enable if enabled else gc.disable)()


def test_collector_paused_inside_and_what_was_built_is_frozen_after():
    gc.enable()
    gc.unfreeze()
    with no_collections():
        assert not gc.isenabled()
        built = [[i] for i in range(10_000)]  # long-lived start-up state (containers the collector tracks)
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(built)  # later collections skip it
    assert not any(gc.is_tracked(x) and any(x is y for y in gc.get_objects()) for x in built[:3])


def test_a_collector_that_was_off_stays_off_and_a_failure_still_restores():
    gc.disable()
    with no_collections():
        pass
    assert not gc.isenabled()
    gc.enable()
    with pytest.raises(RuntimeError), no_collections():
        raise RuntimeError("start-up failed")
    assert gc.isenabled()
