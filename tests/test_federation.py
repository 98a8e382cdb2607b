"""Discovery of who is in the federation, when some nodes lie or break (QUERY before round 1)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from flwr.app import Message, Metadata, MetricRecord, RecordDict

from bouquet import federation
from bouquet.federation import discover_clients


@pytest.fixture(autouse=True)
def _queries_outside_a_run(monkeypatch):
    """Flower builds a sent Message only inside a run; the fake grid needs only its destination."""
    from types import SimpleNamespace

    monkeypatch.setattr(federation, "Message", lambda content, message_type, dst_node_id: SimpleNamespace(
        metadata=SimpleNamespace(dst_node_id=dst_node_id)))


class _Grid:
    def __init__(self, answers: dict[int, dict]):
        self.answers = answers

    def get_node_ids(self):
        return list(self.answers)

    def send_and_receive(self, messages, timeout):
        out = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            md = Metadata(run_id=1, message_id="", src_node_id=node, dst_node_id=0, reply_to_message_id="q",
                          group_id="", created_at=time.time(), ttl=60, message_type="query")
            out.append(Message(RecordDict({"metrics": MetricRecord(self.answers[node])}), metadata=md))
        return out


def test_honest_nodes_give_the_directory():
    d = discover_clients(_Grid({7: {"partition-id": 1, "num-partitions": 2}, 3: {"partition-id": 0, "num-partitions": 2}}))
    assert d.partition_of == {7: 1, 3: 0} and d.num_partitions == 2 and d.nodes_sorted() == [3, 7]


def test_a_taken_partition_id_excludes_both_claimants_and_the_run_goes_on(caplog):
    grid = _Grid({10: {"partition-id": 0, "num-partitions": 3}, 11: {"partition-id": 1, "num-partitions": 3},
                  12: {"partition-id": 2, "num-partitions": 3}, 99: {"partition-id": 0, "num-partitions": 3}})
    d = discover_clients(grid, wait_s=0)
    assert d.partition_of == {11: 1, 12: 2} and d.num_partitions == 3
    assert "partition 0 is claimed by nodes [10, 99]" in caplog.text


def test_malformed_answers_and_a_minority_size_are_left_out(caplog):
    grid = _Grid({1: {"partition-id": 0, "num-partitions": 2}, 2: {"partition-id": 1, "num-partitions": 2},
                  3: {"partition-id": 5, "num-partitions": 1_000_000}, 4: {"partition-id": -1, "num-partitions": 2},
                  5: {"partition-id": 0.5, "num-partitions": 2}, 6: {"num-partitions": 2}})
    d = discover_clients(grid, wait_s=0)
    assert d.partition_of == {1: 0, 2: 1} and d.num_partitions == 2
    assert "node 3 claims num-partitions=1000000" in caplog.text and "node 4 gave a malformed" in caplog.text


def test_nobody_usable_is_an_error():
    with pytest.raises(RuntimeError, match="no SuperNode gave a usable partition id"):
        discover_clients(_Grid({1: {"partition-id": 3, "num-partitions": 2}}), wait_s=0)


class _SlowGrid:
    """Replies to message i become pullable at pull number ``ready_at[i]``."""

    def __init__(self, ready_at: list[int]):
        self.ready_at, self.pulls = ready_at, 0

    def push_messages(self, messages):
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, ids):
        self.pulls += 1
        return [SimpleReply(i) for i in sorted(ids) if self.ready_at[int(i[1:])] <= self.pulls]


class SimpleReply:
    def __init__(self, reply_to: str):
        from types import SimpleNamespace

        self.metadata = SimpleNamespace(reply_to_message_id=reply_to)


def test_prompt_grid_polls_with_doubling_waits_capped_and_returns_every_reply_once(monkeypatch):
    waits = []
    monkeypatch.setattr(federation.time, "sleep", waits.append)
    grid = federation.PromptGrid(_SlowGrid([1, 3, 9]), first_s=0.01, most_s=0.05)
    replies = grid.send_and_receive(["a", "b", "c"])
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert waits == [0.01, 0.02, 0.04, 0.05, 0.05, 0.05, 0.05, 0.05]  # 9 pulls, 8 waits, none after the last reply


def test_prompt_grid_timeout_returns_what_arrived_and_delegates_the_rest(monkeypatch):
    monkeypatch.setattr(federation.time, "sleep", lambda s: None)
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr(federation.time, "monotonic", lambda: next(clock))
    inner = _SlowGrid([1, 10**6])
    inner.get_node_ids = lambda: [4, 5]
    grid = federation.PromptGrid(inner)
    replies = grid.send_and_receive(["a", "b"], timeout=3)
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"] and inner.pulls == 3
    assert grid.get_node_ids() == [4, 5]
    with pytest.raises(ValueError, match="first_s"):
        federation.PromptGrid(inner, first_s=0.2, most_s=0.1)


def test_a_node_claiming_a_smaller_federation_cannot_take_it_over(caplog):
    """A lone node saying num-partitions=1 would otherwise be "the whole federation": with the
    operator's federation-size it is left out; without it a tie decides nothing."""
    attacker = {"partition-id": 0, "num-partitions": 1}
    honest = {1: {"partition-id": 0, "num-partitions": 2}, 2: {"partition-id": 1, "num-partitions": 2}}
    d = discover_clients(_Grid({0: attacker, **honest}), expected=2, wait_s=0)
    assert d.partition_of == {1: 0, 2: 1} and d.num_partitions == 2
    assert "node 0 claims num-partitions=1, the others 2" in caplog.text
    with pytest.raises(RuntimeError, match="no SuperNode gave a usable partition id"):
        discover_clients(_Grid({0: attacker}), expected=2, wait_s=0)  # connected alone, before the others
    with pytest.raises(RuntimeError, match="disagree on num-partitions.*set federation-size"):
        discover_clients(_Grid({0: attacker, 1: honest[1]}), wait_s=0)  # 1 against 1: no majority


@pytest.fixture
def pull_defaults():
    """cap_object_pulls changes flwr's defaults for the whole process: put them back."""
    from flwr.supercore.inflatable import inflatable_utils as utils  # noqa: PLC0415

    from flwr.supercore import constant  # noqa: PLC0415

    saved = {fn: dict(fn.__kwdefaults__) for fn in (utils.pull_objects, utils.pull_and_inflate_object_from_tree)}
    for fn in saved:  # flwr's own, whatever an earlier test of this process (a ServerApp's main) set
        fn.__kwdefaults__.update(initial_backoff=constant.PULL_INITIAL_BACKOFF, backoff_cap=constant.PULL_BACKOFF_CAP,
                                 max_tries_per_object=constant.PULL_MAX_TRIES_PER_OBJECT)
    yield utils
    for fn, defaults in saved.items():
        fn.__kwdefaults__.clear()
        fn.__kwdefaults__.update(defaults)


def test_objects_that_arrive_late_are_asked_for_again_within_the_cap(pull_defaults):
    """flwr hands a message on before its objects arrive; its pull waits 1 s, 2 s, 4 s ... between asks."""
    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError  # noqa: PLC0415

    asks: list[float] = []

    def late_object(object_id: str) -> bytes:  # missing for the first three asks, as a model still in transit
        asks.append(time.monotonic())
        if len(asks) <= 3:
            raise ObjectUnavailableError(object_id)
        return b"payload"

    assert pull_defaults.pull_objects.__kwdefaults__["initial_backoff"] == 1  # flwr's: the three misses cost ~7 s
    federation.cap_object_pulls(0.2)
    assert pull_defaults.pull_objects(["obj"], late_object) == {"obj": b"payload"}
    gaps = [b - a for a, b in zip(asks, asks[1:])]
    assert len(gaps) == 3 and max(gaps) < 0.2 * 1.2 + 0.1  # 0.05, 0.1, 0.2 s (± 20 % jitter), never a second
    # an object that never comes is given up after as long as Flower would: 500 tries x 10 s = 25,000 x 0.2 s
    assert pull_defaults.pull_objects.__kwdefaults__["max_tries_per_object"] == 25_000
    assert pull_defaults.pull_objects.__kwdefaults__["max_time"] == 7200  # and flwr's own 2 h bound is kept
    # a caller's own backoff still wins over the defaults
    asks.clear()
    assert pull_defaults.pull_objects(["obj"], late_object, initial_backoff=0.3, backoff_cap=0.3)
    assert min(b - a for a, b in zip(asks, asks[1:])) > 0.3 * 0.8 - 0.01


def test_object_pull_defaults_refuse_a_non_positive_wait_and_never_exceed_flowers_cap():
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="most_s"):
            federation.object_pull_defaults(bad)
    slow = federation.object_pull_defaults(30)  # --idle-poll 30: no slower than Flower's own pulls
    assert slow["backoff_cap"] == 10 and slow["initial_backoff"] == 2.5 and slow["max_tries_per_object"] == 500


def test_the_server_app_caps_object_pulls_only_on_a_deployment_grid(pull_defaults, monkeypatch):
    """The cap is process-wide: a simulation's ServerApp (InMemoryGrid, no pulls) must leave it alone."""
    from flwr.superlink.grid.http_grid import HttpGrid  # noqa: PLC0415
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid  # noqa: PLC0415

    from bouquet import server_app  # noqa: PLC0415

    monkeypatch.setattr(server_app, "run", lambda *a, **k: None)
    context = SimpleNamespace(run_config={}, run_id=1)
    server_app.main(object.__new__(InMemoryGrid), context)
    assert pull_defaults.pull_objects.__kwdefaults__["initial_backoff"] == 1  # flwr's own
    server_app.main(object.__new__(HttpGrid), context)
    assert pull_defaults.pull_objects.__kwdefaults__["backoff_cap"] == pytest.approx(0.1)
