import numpy as np

from bouquet.strategies.rounds import train_round
from bouquet.strategies.fedlog import FedLoGStrategy
from tests.strategies.helpers import global_arrays, make_strategy, reply


def _reply(node, syn, share, w=1.0):
    msg = reply(node, {"w": np.full(2, w)}, {"num-examples": 10, "fedlog-uniform": 1.0})
    from flwr.app import Array, ArrayRecord

    msg.content["fedlog"] = ArrayRecord({"syn_head": Array(syn.astype(np.float32)), "class_share": Array(share.astype(np.float32))})
    return msg


def _strategy(tmp_path):
    """Three Cora clients, one synthetic node per class, a two-entry model."""
    strategy, recorder = make_strategy(FedLoGStrategy, tmp_path, {1: 0, 2: 1, 3: 2},
                                       dataset="cora", method="fedlog", **{"fedlog-num-proto": 1})
    strategy.global_arrays = global_arrays(w=np.zeros(2))
    return strategy, recorder


def test_uniform_module_mean_and_bad_synthetic_upload_rejected(tmp_path):
    strategy, recorder = _strategy(tmp_path)
    c, f = strategy.num_classes, strategy.num_features
    share = np.full(c, 1 / c)
    good1 = _reply(1, np.ones((c, f)), share, w=1.0)
    good2 = _reply(2, 3 * np.ones((c, f)), share, w=4.0)
    bad = _reply(3, np.full((c, f), np.nan), share, w=100.0)
    arrays, _ = train_round(strategy, 1, [bad, good2, good1])
    np.testing.assert_allclose(arrays["w"].numpy(), [2.5, 2.5])  # unweighted mean of 1 and 4
    assert [r["partition_id"] for r in recorder.rejections] == [2]
    x, y = strategy.global_synthetic
    np.testing.assert_allclose(x, 2.0)  # equal shares: mean of 1 and 3
    assert x.shape == (c, f) and list(y) == list(range(c))


def test_an_upload_that_would_take_over_the_shared_synthetic_nodes_is_rejected(tmp_path):
    """The upload is outside ``arrays`` (no clipping, no robust rule): the server bounds it."""
    from flwr.app import Array

    strategy, recorder = _strategy(tmp_path)
    c, f = strategy.num_classes, strategy.num_features
    share = np.full(c, 1 / c)
    attacks = {
        "weight": _reply(3, np.full((c, f), -5.0), np.full(c, 1e30)),  # a share of 1e30 would own every class
        "sum": _reply(3, np.full((c, f), -5.0), np.full(c, 0.9)),  # each share <= 1 but 9x a distribution
        "far": _reply(3, np.full((c, f), 3e38), share),  # finite, but nowhere near feature space
        "extra": _reply(3, np.ones((c, f)), share),
    }
    attacks["extra"].content["fedlog"]["junk"] = Array(np.zeros(1_000_000, np.float32))
    for name, bad in attacks.items():
        recorder.rejections.clear()
        train_round(strategy, 1, [_reply(1, np.ones((c, f)), share), _reply(2, 3 * np.ones((c, f)), share), bad])
        assert [r["partition_id"] for r in recorder.rejections] == [2], name
        np.testing.assert_allclose(strategy.global_synthetic[0], 2.0, err_msg=name)  # the honest two only
