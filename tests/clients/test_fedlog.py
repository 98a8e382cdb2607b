"""FedLoG's math against hand-computed values."""

import numpy as np
import pytest
import torch

from bouquet.clients.fedlog import (
    condense,
    degree_weight,
    mixed_log_probs,
    mixed_probs,
    pair_graph,
    scale_features,
    update_gamma,
)


class _NoPermutation:
    def permutation(self, n):
        return np.arange(n)


def test_global_synthetic_nodes_mix_head_nodes_by_class_share():
    # 2 classes, s = 2 synthetic nodes per class, 1 feature; 2 clients.
    a = {"syn_head": np.array([[1.0], [2.0], [10.0], [20.0]]), "class_share": np.array([0.75, 0.25])}
    b = {"syn_head": np.array([[3.0], [4.0], [30.0], [40.0]]), "class_share": np.array([0.25, 0.0])}
    x, y = condense([a, b], 2, _NoPermutation())
    # class 0: w = (0.75, 0.25) -> [0.75*1 + 0.25*3, 0.75*2 + 0.25*4]; class 1: w = (1, 0)
    np.testing.assert_allclose(x[:, 0], [1.5, 2.5, 10.0, 20.0])
    np.testing.assert_array_equal(y, [0, 0, 1, 1])


def test_class_absent_everywhere_gets_uniform_weights_and_permutation_is_per_client():
    a = {"syn_head": np.array([[1.0], [2.0], [10.0], [20.0]]), "class_share": np.array([1.0, 0.0])}
    b = {"syn_head": np.array([[3.0], [4.0], [30.0], [40.0]]), "class_share": np.array([1.0, 0.0])}

    class Reverse:
        def permutation(self, n):
            return np.arange(n)[::-1]

    x, _ = condense([a, b], 2, Reverse())
    # class 0: w = (0.5, 0.5), both reversed: [0.5*2 + 0.5*4, 0.5*1 + 0.5*3]; class 1 absent: 1/K
    np.testing.assert_allclose(x[:, 0], [3.0, 2.0, 30.0, 20.0])


def test_gamma_moves_by_0_001_toward_confident_classes_and_stays_in_unit_interval():
    gamma = torch.tensor([0.0, 0.5, 1.0])
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    correct = torch.tensor([1, 1, 1, 1, 1, 1, 0, 1], dtype=torch.bool)  # class accs 1.0, 0.5, 1.0
    np.testing.assert_allclose(update_gamma(gamma, correct, labels).numpy(), [0.001, 0.499, 1.0], atol=1e-7)
    low = update_gamma(torch.zeros(3), torch.zeros(8, dtype=torch.bool), labels)
    assert torch.equal(low, torch.zeros(3))


def test_feature_scaling_pulls_toward_the_global_mean():
    x = torch.tensor([[0.0], [4.0]])
    out = scale_features(x, torch.tensor([0, 1]), torch.tensor([0.5, 0.0]))
    np.testing.assert_allclose(out.numpy(), [[1.0], [4.0]])  # mean 2: 0 + 0.5*(2-0); gamma_1 = 0


def test_degree_mixing():
    # node 0 has out-degree 4 (alpha = sigmoid(0) = 0.5 with tau = 3), node 1 has 0
    edges = torch.tensor([[0, 0, 0, 0], [1, 2, 3, 4]])
    alpha = degree_weight(edges, 5, tau=3.0)
    assert alpha[0] == pytest.approx(0.5) and alpha[1] == pytest.approx(torch.sigmoid(torch.tensor(-4.0)).item())
    lh = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1]]))
    lt = torch.log(torch.tensor([[0.2, 0.8], [0.2, 0.8]]))
    a = torch.tensor([0.5, 0.0])
    np.testing.assert_allclose(mixed_probs(lh, lt, a).numpy(), [[0.55, 0.45], [0.2, 0.8]], rtol=1e-6)
    np.testing.assert_allclose(mixed_log_probs(lh, lt, a)[0].numpy(), 0.5 * lh[0] + 0.5 * lt[0], rtol=1e-6)


def test_prompt_pairs_are_bidirectional_two_node_graphs():
    nodes, edges = pair_graph(torch.zeros(3, 2), torch.ones(3, 2))
    assert nodes.shape == (6, 2)
    assert sorted(map(tuple, edges.T.tolist())) == [(0, 3), (1, 4), (2, 5), (3, 0), (4, 1), (5, 2)]


# --- the authors' epoch, pretraining and prompt generator (issue 19, "fix first") -------------
from types import SimpleNamespace  # noqa: E402

from bouquet.clients.fedlog import FedLoGNet, epoch_batches, pretrain, prompt_generators  # noqa: E402


@pytest.mark.parametrize("n, sizes", [(46, [46]), (64, [64]), (130, [64, 64]), (1, [1]), (0, [])])
def test_an_epoch_is_max_n_over_b_batches_and_a_small_client_trains_on_all_its_nodes(n, sizes):
    order = torch.randperm(n)
    batches = epoch_batches(order, 64)
    assert [len(b) for b in batches] == sizes
    assert torch.equal(torch.cat(batches) if batches else order[:0], order[:sum(sizes)])  # no node twice


def test_the_prompt_generator_has_one_dropout_before_its_output_layer():
    (gen,) = prompt_generators(7, 1, seed=0)
    kinds = [type(m).__name__ for m in gen]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Dropout", "Linear", "Tanh"]
    assert [tuple(m.weight.shape) for m in gen if isinstance(m, torch.nn.Linear)] == [(256, 7), (512, 256), (7, 512)]


def _tiny_graph(n: int = 20, f: int = 5, c: int = 3):
    g = torch.Generator().manual_seed(0)
    ring = torch.arange(n)
    edges = torch.stack([torch.cat([ring, (ring + 1) % n]), torch.cat([(ring + 1) % n, ring])])
    mask = torch.ones(n, dtype=torch.bool)
    return SimpleNamespace(x=torch.randn(n, f, generator=g), edge_index=edges, y=torch.arange(n) % c,
                           train_mask=mask, val_mask=torch.zeros(n, dtype=torch.bool))


def _pretrained(epochs: int, as_code: bool) -> dict:
    data = _tiny_graph()
    torch.manual_seed(1)
    net = FedLoGNet(5, 3, paper=False)
    torch.manual_seed(2)
    pretrain(net, data, epochs, batch_size=64, lr=0.01, gen=torch.Generator().manual_seed(3), as_code=as_code)
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_pretraining_as_the_code_keeps_the_last_epoch_and_the_paper_variant_restores_the_best():
    """No validation nodes: every epoch scores 0. The code's rule (a tie is no worse) never stops
    and keeps the last epoch; the paper variant keeps epoch 1's state (the only improvement).
    Fewer nodes than a batch: both train on all of them, so their first epochs are the same."""
    one, three = _pretrained(1, as_code=True), _pretrained(3, as_code=True)
    paper = _pretrained(3, as_code=False)
    assert any(not torch.equal(one[k], three[k]) for k in one)
    assert all(torch.equal(one[k], paper[k]) for k in one)


def test_a_client_with_fewer_training_nodes_than_a_batch_trains():
    """Cora, 10 Louvain clients, seed 1: the smallest client has fewer training nodes than the
    batch size; its local step must move the model (it used to run zero batches)."""
    from bouquet.clients.base import ClientCall, model_to_arrays
    from bouquet.clients.fedlog import FedLoGClient
    from bouquet.config import RunConfig

    run = RunConfig.from_run_config({"method": "fedlog", "dataset": "cora", "partitioner": "louvain", "seed": 1,
                                     "fedlog-pretrain-epochs": 0})
    calls = [ClientCall(cid=i, num_partitions=10, server_round=1, run=run, arrays={}, config={}) for i in range(10)]
    small = min(calls, key=lambda c: int(c.data.train_mask.sum()))
    assert 0 < int(small.data.train_mask.sum()) < run.batch_size
    torch.manual_seed(0)
    start = model_to_arrays(FedLoGNet(small.data.x.shape[1], small.data.num_classes, paper=False))
    call = ClientCall(cid=small.cid, num_partitions=10, server_round=1, run=run, arrays=start, config={})
    reply = FedLoGClient().train(call)
    moved = [k for k in start if not np.array_equal(start[k], reply.arrays[k])]
    assert any(k.startswith("embedder.") for k in moved), moved
