"""ULS and ELS on the server, against hand values: the clip bound a dishonest user cannot
exceed, the noise's standard deviation, the fixed denominator, FedAvg recovered without noise,
the budget stop (fresh and resumed), and Flower's own DP wrappers around a Bouquet FedAvg."""

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

from bouquet.config import ConfigError, RunConfig
from bouquet.privacy.budget import BudgetExhausted, PrivacyPlan, PrivacyRun
from bouquet.strategies.els import ELSStrategy
from bouquet.strategies.fedavg import FedAvgStrategy
from bouquet.strategies.rounds import configure, train_round
from bouquet.strategies.userdp import UserLevelSampling
from tests.strategies.helpers import global_arrays, make_strategy, reply

NODES = {10 + i: i for i in range(10)}


@pytest.fixture(autouse=True)
def _run_identity(monkeypatch):
    """Flower's Message() needs a run id, which a ServerApp process has."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
DIM = 4


def _uls(tmp_path, sigma, clip, q, users=10, budget=math.inf, **cfg):
    inner, recorder = make_strategy(FedAvgStrategy, tmp_path, dict(list(NODES.items())[:users]),
                                    **{"method": "fedavg", "dataset": "digits", "partitioner": "iid", "dp": "uls", **cfg})
    inner.max_examples = {i: 100.0 for i in range(users)}
    plan = PrivacyPlan("uls", sigma, clip, q, 1e-5, 64, users, q * users, budget)
    return UserLevelSampling(inner, PrivacyRun(plan, inner.cfg, recorder)), inner, recorder


def _start_round(strategy, rnd, g):
    """configure_train as the round loop calls it, on a grid of every node."""

    class Grid:
        def get_node_ids(self):
            return list(NODES)

    return configure(strategy, "train", rnd, g, ConfigRecord(), Grid())


def _update(node, w, n=5):
    return reply(node, {"w": np.asarray(w, np.float32)}, {"num-examples": n})


def test_a_huge_update_moves_the_model_by_at_most_c_over_qn(tmp_path):
    strategy, _, _ = _uls(tmp_path, sigma=0.0, clip=1.0, q=0.5)  # denominator qN = 5
    g = global_arrays(w=np.zeros(DIM))
    rnd, sampled = next((r, s) for r in range(1, 50) if len(s := [m.metadata.dst_node_id for m in _start_round(strategy, r, g)]) >= 2)
    honest = [0.3, 0.0, 0.0, 0.0]  # from two of the users sampled (a reply from anyone else is refused)
    arrays, _ = train_round(strategy, rnd, [_update(sampled[0], honest), _update(sampled[1], [1e6, -1e6, 1e6, 1e6])],
                            reference=g)
    moved = arrays["w"].numpy() - np.asarray(honest) / 5  # the honest user's share, by hand
    assert np.linalg.norm(moved) == pytest.approx(1.0 / 5, rel=1e-5)  # exactly C / (qN), not more


@pytest.mark.parametrize("replies", [0, 3])
def test_noise_std_is_sigma_c_over_qn(tmp_path, replies):
    sigma, clip, q, users = 2.0, 0.5, 0.5, 10  # σC/(qN) = 0.2, whatever the cohort size m
    strategy, _, _ = _uls(tmp_path, sigma, clip, q, users)
    size = 200_000
    g = global_arrays(w=np.zeros(size))
    _start_round(strategy, 1, g)
    arrays, _ = train_round(strategy, 1, [_update(10 + i, np.zeros(size)) for i in range(replies)], reference=g)
    assert np.std(arrays["w"].numpy()) == pytest.approx(sigma * clip / (q * users), rel=0.01)


def test_without_noise_or_clipping_uls_is_fedavg_over_equal_users(tmp_path):
    updates = {10: [1.0, 2.0, 0.0, -1.0], 11: [3.0, 0.0, 2.0, 1.0], 12: [-1.0, 1.0, 1.0, 0.0]}
    strategy, _, _ = _uls(tmp_path, sigma=0.0, clip=1e9, q=1.0, users=3)
    g = global_arrays(w=np.full(DIM, 0.5))
    messages = _start_round(strategy, 1, g)
    assert len(messages) == 3  # q = 1: every user
    uls, _ = train_round(strategy, 1, [_update(n, w, 7) for n, w in updates.items()], reference=g)
    fedavg, _ = make_strategy(FedAvgStrategy, tmp_path / "f", {10: 0, 11: 1, 12: 2})
    fedavg.max_examples = {0: 100.0, 1: 100.0, 2: 100.0}
    fedavg.global_arrays = g
    plain, _ = train_round(fedavg, 1, [_update(n, w, 7) for n, w in updates.items()])
    np.testing.assert_array_equal(uls["w"].numpy(), plain["w"].numpy())


def test_poisson_cohort_varies_and_is_seeded(tmp_path):
    a, _, _ = _uls(tmp_path / "a", sigma=1.0, clip=1.0, q=0.3)
    b, _, _ = _uls(tmp_path / "b", sigma=1.0, clip=1.0, q=0.3)
    g = global_arrays(w=np.zeros(DIM))
    sizes = []
    for rnd in range(1, 21):
        ma, mb = _start_round(a, rnd, g), _start_round(b, rnd, g)
        assert [m.metadata.dst_node_id for m in ma] == [m.metadata.dst_node_id for m in mb]
        sizes.append(len(ma))
        a.privacy.releases = b.privacy.releases = 0  # configure only; nothing released
    assert len(set(sizes)) > 2 and 0 < np.mean(sizes) < 10


def test_budget_stops_before_epsilon_is_exceeded_fresh_and_resumed(tmp_path):
    strategy, inner, recorder = _uls(tmp_path, sigma=1.0, clip=1.0, q=0.5)
    ledger = strategy.privacy.ledger
    budget = (ledger.epsilon_after(2) + ledger.epsilon_after(3)) / 2  # room for exactly 2 releases
    strategy.privacy.plan = strategy.privacy.plan.__class__(**{**strategy.privacy.plan.__dict__, "budget": budget})
    g = global_arrays(w=np.zeros(DIM))
    for rnd in (1, 2):
        _start_round(strategy, rnd, g)
        train_round(strategy, rnd, [_update(10, [0.1, 0, 0, 0])], reference=g)
    assert strategy.privacy.epsilon <= budget
    assert recorder.server[2]["dp-epsilon-spent"] == pytest.approx(ledger.epsilon_after(2))
    with pytest.raises(BudgetExhausted, match="round 3 would raise epsilon"):
        _start_round(strategy, 3, g)
    # a resumed run gets its mechanism and its releases back from the checkpoint, then stops too
    saved = strategy.state_arrays()
    resumed, _, _ = _uls(tmp_path / "r", sigma=0.3, clip=1.0, q=0.5, budget=budget)  # a different sigma...
    resumed.load_state_arrays(saved)
    assert resumed.privacy.plan.noise_multiplier == 1.0 and resumed.privacy.releases == 2  # ...is not used
    with pytest.raises(BudgetExhausted):
        _start_round(resumed, 3, g)


def test_els_steps_by_the_noisy_clipped_sum_over_the_expected_batch(tmp_path):
    strategy, recorder = make_strategy(ELSStrategy, tmp_path, {10: 0, 11: 1}, method="els", dataset="digits",
                                       partitioner="iid", **{"learning-rate": 0.5})
    strategy.max_examples = {0: 50.0, 1: 50.0}
    plan = PrivacyPlan("els", 0.0, 1.0, 0.1, 1e-5, 4, 2, 0.8, math.inf)  # k = 4: a user's sum is at most 4C
    strategy.attach(PrivacyRun(plan, strategy.cfg, recorder))
    g = global_arrays(w=np.ones(DIM))
    strategy.global_arrays = g
    sums = {10: [1.0, 1.0, 0.0, 0.0], 11: [100.0, 0.0, 0.0, 0.0]}  # the second exceeds k·C = 4
    replies = [reply(n, {"w": np.asarray(s)}, {"num-examples": 4, "els-sampled": 2}) for n, s in sums.items()]
    arrays, _ = train_round(strategy, 1, replies)
    expected = np.ones(DIM) - 0.5 * (np.asarray(sums[10]) + np.array([4.0, 0, 0, 0])) / 0.8
    np.testing.assert_allclose(arrays["w"].numpy(), expected, rtol=1e-6)


def test_flowers_accounted_dp_wrapper_accepts_a_bouquet_fedavg(tmp_path):
    inner, _ = make_strategy(FedAvgStrategy, tmp_path, {10: 0, 11: 1})
    inner.max_examples = {0: 100.0, 1: 100.0}
    accountant = RdpAccountant(PrivacyConfig(1e-5, 2, NeighboringRelation.ADD_OR_REMOVE_ONE,
                                             SamplingMethod.NO_AMPLIFICATION))
    wrapped = DifferentialPrivacyServerSideFixedClipping(inner, 0.5, 1.0, 2, accountant=accountant)
    g = global_arrays(w=np.zeros(DIM))
    messages = _start_round(wrapped, 1, g)
    assert len(messages) == 2
    arrays, _ = train_round(wrapped, 1, [_update(10, [10.0, 0, 0, 0]), _update(11, [0, 10.0, 0, 0])], reference=g)
    assert arrays is not None and wrapped.privacy_spent().epsilon > 0  # released and accounted
    # Flower clipped each update to 1 before the mean: the noiseless part is (0.5, 0.5, 0, 0)
    assert np.abs(arrays["w"].numpy() - [0.5, 0.5, 0, 0]).max() < 5 * 0.5 * 1.0 / 2 * 4


@pytest.mark.parametrize(("config", "named"), [
    ({"method": "fedavg", "dp": "els"}, "method='els'"),
    ({"method": "fedpub", "dataset": "cora", "dp": "uls"}, "fedpub"),
    ({"method": "local", "dp": "uls"}, "no model update"),
    ({"method": "fedlog", "dataset": "cora", "partitioner": "louvain", "dp": "uls"}, "synthetic nodes"),
    ({"method": "fedavg", "dp": "uls", "aggregator": "median"}, "aggregator"),
    ({"method": "fedavg", "dp": "uls", "min-replies": 2}, "min-replies"),
    ({"method": "uls", "fraction-train": 0.5}, "fraction-train"),
    ({"method": "els", "dp": "uls"}, "contradicts"),
    ({"method": "fedavg", "dp": "uls", "dp-secure-noise": "yes"}, "dp-secure-noise"),
])
def test_settings_that_would_void_the_guarantee_fail_naming_the_key(config, named):
    with pytest.raises(ConfigError, match=named):
        RunConfig.from_run_config({"dataset": "digits", "partitioner": "iid", **config})


def test_a_resumed_run_adds_the_noise_it_accounts(tmp_path):
    """The mechanism comes back from the checkpoint: the noise drawn is the σ accounted, not the
    σ a re-calibration for the new round count would give."""
    first, _, _ = _uls(tmp_path / "a", sigma=2.0, clip=0.5, q=0.5)
    saved = first.state_arrays()
    resumed, _, _ = _uls(tmp_path / "b", sigma=0.3, clip=0.5, q=0.5)
    resumed.load_state_arrays(saved)
    size = 200_000
    g = global_arrays(w=np.zeros(size))
    _start_round(resumed, 1, g)
    arrays, _ = train_round(resumed, 1, [_update(10 + i, np.zeros(size)) for i in range(3)], reference=g)
    assert np.std(arrays["w"].numpy()) == pytest.approx(2.0 * 0.5 / 5, rel=0.01)


def test_a_release_after_the_last_checkpoint_is_counted_on_resume(tmp_path):
    strategy, _, recorder = _uls(tmp_path, sigma=1.0, clip=1.0, q=0.5)
    g = global_arrays(w=np.zeros(DIM))
    _start_round(strategy, 1, g)
    train_round(strategy, 1, [_update(10, [0.1, 0, 0, 0])], reference=g)
    checkpointed = strategy.state_arrays()  # after round 1
    _start_round(strategy, 2, g)
    train_round(strategy, 2, [_update(10, [0.1, 0, 0, 0])], reference=g)  # released; killed before its checkpoint
    again = UserLevelSampling(strategy.strategy, PrivacyRun(strategy.privacy.plan, strategy.hooks.cfg, recorder))
    again.load_state_arrays(checkpointed)
    assert again.privacy.releases == 2 and again.privacy.epsilon == pytest.approx(strategy.privacy.epsilon)


def test_integer_arrays_keep_the_global_value_under_dp(tmp_path):
    strategy, _, _ = _uls(tmp_path, sigma=1.0, clip=1.0, q=1.0, users=2)
    g = ArrayRecord({"w": Array(np.zeros(DIM, np.float32)), "count": Array(np.array([5], np.int64))})
    _start_round(strategy, 1, g)
    forged = reply(10, None, {"num-examples": 5})
    forged.content["arrays"] = ArrayRecord({"w": Array(np.zeros(DIM, np.float32)), "count": Array(np.array([10**9], np.int64))})
    arrays, _ = train_round(strategy, 1, [forged], reference=g)
    assert arrays["count"].numpy().tolist() == [5]


def test_dp_delta_must_be_below_one_over_users():
    cfg = RunConfig.from_run_config({"method": "fedavg", "dataset": "digits", "partitioner": "iid", "dp": "uls",
                                     "dp-delta": 0.3})
    cfg.check_federation(3)  # 0.3 < 1/3
    with pytest.raises(ConfigError, match="dp-delta"):
        cfg.check_federation(4)
