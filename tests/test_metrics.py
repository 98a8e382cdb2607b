import math

import numpy as np
import pytest

from bouquet.metrics import balanced_accuracy, flip_rates, track_forgetting, weighted_mean


def test_weighted_mean_leaves_out_ids_and_nan():
    rows = [{"num-examples": 1, "partition-id": 0, "acc": 0.0, "loss": float("nan")},
            {"num-examples": 3, "partition-id": 1, "acc": 1.0, "loss": 2.0}]
    out = weighted_mean(rows)
    assert out == {"acc": pytest.approx(0.75), "loss": pytest.approx(2.0)}
    assert "partition-id" not in out and "num-examples" not in out
    assert not any(math.isnan(v) for v in out.values())


def test_accuracies_are_micro_averaged_by_their_own_counts():
    rows = [{"num-examples": 100, "local_model@unseen_node": 1.0, "num-examples@unseen_node": 1, "train_loss": 1.0},
            {"num-examples": 1, "local_model@unseen_node": 0.0, "num-examples@unseen_node": 3, "train_loss": 2.0}]
    out = weighted_mean(rows)
    assert out["local_model@unseen_node"] == pytest.approx(0.25)  # (1*1 + 3*0) / 4
    assert out["train_loss"] == pytest.approx((100 + 2) / 101)
    assert "num-examples@unseen_node" not in out


# --- forgetting and retention (issue 4) -------------------------------------------------


def test_flip_rates_on_constructed_vectors():
    before = np.array([1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    now = np.array([1, 0, 1, 0, 0, 0, 1, 1], dtype=bool)
    nfr, pfr = flip_rates(before, now)  # right->wrong at 1 and 4; wrong->right at 2
    assert nfr == pytest.approx(2 / 8) and pfr == pytest.approx(1 / 8)
    assert flip_rates(now, now) == (0.0, 0.0)
    with pytest.raises(ValueError, match="one shape"):
        flip_rates(before, now[:3])


def test_balanced_accuracy_is_the_mean_recall_of_present_classes():
    y = np.array([0, 0, 0, 0, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2])  # recalls 3/4, 1, 1/2
    assert balanced_accuracy(pred, y) == pytest.approx((0.75 + 1 + 0.5) / 3)


def test_track_forgetting_local_flips_and_backward_transfer():
    mem: dict = {}
    # round 1: trains (first time: no flip rates), then the new global model scores 0.6 on its test
    m, mem = track_forgetting("train", 1, {"correct@local_test": np.array([1, 1, 0, 0], bool), "acc": 1.0}, mem)
    assert "correct@local_test" not in m and "nfr:local_model@local_test" not in m
    m, mem = track_forgetting("evaluate", 1, {"global_model@local_test": 0.6}, mem)
    assert "bwt" not in m
    # round 2: not sampled; the global model now scores 0.45 on its test -> bwt = -0.15
    m, _ = track_forgetting("evaluate", 2, {"global_model@local_test": 0.45}, mem)
    assert m["bwt"] == pytest.approx(-0.15)
    # round 3: sampled again; compared with the local model of round 1
    m, mem = track_forgetting("train", 3, {"correct@local_test": np.array([0, 1, 1, 0], bool)}, mem)
    assert m["nfr:local_model@local_test"] == pytest.approx(1 / 4)
    assert m["pfr:local_model@local_test"] == pytest.approx(1 / 4)
    m, mem = track_forgetting("evaluate", 3, {"global_model@local_test": 0.7}, mem)
    assert "bwt" not in m  # it just took part: 0.7 is its new reference
    m, _ = track_forgetting("evaluate", 4, {"global_model@local_test": 0.9}, mem)
    assert m["bwt"] == pytest.approx(0.2)


def test_bwt_with_trained_also_counts_a_returning_client_against_its_previous_reference():
    """FedKPer's code: a client sampled again this round is scored before its reference moves."""
    mem: dict = {}
    m, mem = track_forgetting("train", 1, {}, mem)
    m, mem = track_forgetting("evaluate", 1, {"global_model@local_test": 0.6}, mem)
    assert "bwt-with-trained" not in m and "bwt" not in m  # first participation: nothing to compare
    m, mem = track_forgetting("evaluate", 2, {"global_model@local_test": 0.45}, mem)
    assert m["bwt-with-trained"] == pytest.approx(-0.15) == m["bwt"]  # not sampled: both agree
    m, mem = track_forgetting("train", 3, {}, mem)
    m, mem = track_forgetting("evaluate", 3, {"global_model@local_test": 0.7}, mem)
    assert "bwt" not in m and m["bwt-with-trained"] == pytest.approx(0.1)  # 0.7 - 0.6 (round 1's reference)
    m, _ = track_forgetting("evaluate", 4, {"global_model@local_test": 0.9}, mem)
    assert m["bwt-with-trained"] == pytest.approx(0.2) == m["bwt"]  # against round 3's 0.7


def test_bwt_is_a_plain_mean_over_clients():
    rows = [{"num-examples": 100, "bwt": -0.2}, {"num-examples": 1, "bwt": 0.4}]
    assert weighted_mean(rows)["bwt"] == pytest.approx(0.1)


def test_first_visit_zero_compares_a_first_participation_with_an_all_wrong_model():
    """FedKPer's code: the first local NFR is 0 (nothing was right before), positive flips = accuracy."""
    correct = np.array([1, 0, 1, 1], bool)
    m, _ = track_forgetting("train", 1, {"correct@local_test": correct}, {}, first_visit="zero")
    assert m["nfr:local_model@local_test"] == 0.0 and m["pfr:local_model@local_test"] == pytest.approx(0.75)
    m, _ = track_forgetting("train", 1, {"correct@local_test": correct}, {})
    assert "nfr:local_model@local_test" not in m  # Bouquet's default: no earlier model, no flip rate
