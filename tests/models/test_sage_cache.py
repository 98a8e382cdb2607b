"""The cached first-layer aggregation changes the time of graph training, never its result."""

import numpy as np
import pytest
import torch
from torch_geometric.nn.models import GCN, GraphSAGE

from bouquet.models import sage_cache


def _graph(n: int = 60, f: int = 40, e: int = 400, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, f, generator=g), torch.randint(0, n, (2, e), generator=g)


@pytest.mark.parametrize("layers", [2, 3])
def test_outputs_dropout_and_gradients_are_bitwise_those_of_the_full_forward(layers):
    x, ei = _graph()
    torch.manual_seed(0)
    gnn = GraphSAGE(40, 16, num_layers=layers, out_channels=5, dropout=0.5).train()
    agg = sage_cache.first_aggregation(gnn, x, ei)
    results = []
    for call in (lambda: gnn(x, ei), lambda: sage_cache.forward(gnn, x, ei, agg)):
        gnn.zero_grad()
        torch.manual_seed(7)  # the same dropout draws, if the ops are the same
        out = call()
        out[:10].pow(2).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in gnn.parameters()]))
    (a, ga), (b, gb) = results
    assert torch.equal(a, b)
    assert all(torch.equal(u, v) for u, v in zip(ga, gb))
    torch.manual_seed(8)  # dropout was on: other draws give another output
    assert not torch.equal(sage_cache.forward(gnn, x, ei, agg), a)


def test_one_aggregation_serves_another_model_of_the_same_architecture():
    """A distillation teacher reuses the student's aggregation: it has no parameters."""
    x, ei = _graph()
    torch.manual_seed(0)
    student = GraphSAGE(40, 16, num_layers=2, out_channels=5).eval()
    teacher = GraphSAGE(40, 16, num_layers=2, out_channels=5).eval()
    embed = sage_cache.cached(student, x, ei)
    assert torch.equal(embed(teacher), teacher(x, ei))
    assert not torch.equal(embed(teacher), embed(student))


@pytest.mark.parametrize("make", [
    lambda: GraphSAGE(40, 16, num_layers=2, out_channels=5, normalize=True),
    lambda: GraphSAGE(40, 16, num_layers=2, out_channels=5, project=True),
    lambda: GraphSAGE(40, 16, num_layers=2, out_channels=5, jk="cat"),
    lambda: GraphSAGE(40, 16, num_layers=2, out_channels=5, norm="batch"),
    lambda: GCN(40, 16, num_layers=2, out_channels=5),
])
def test_other_models_are_refused_by_the_cache_and_called_directly(make):
    x, ei = _graph()
    torch.manual_seed(0)
    gnn = make().eval()
    assert not sage_cache.supported(gnn)
    with pytest.raises(TypeError, match="not a plain mean GraphSAGE"):
        sage_cache.first_aggregation(gnn, x, ei)
    assert torch.equal(sage_cache.cached(gnn, x, ei)(gnn), gnn(x, ei))


def test_learnable_inputs_are_not_cached():
    x, ei = _graph()
    gnn = GraphSAGE(40, 16, num_layers=2, out_channels=5)
    with pytest.raises(ValueError, match="fixed input"):
        sage_cache.first_aggregation(gnn, x.requires_grad_(), ei)


def _weights_after(monkeypatch, cache: bool, train) -> dict[str, np.ndarray]:
    if not cache:
        monkeypatch.setattr(sage_cache, "supported", lambda gnn: False)
    out = train()
    monkeypatch.undo()
    return out


def test_local_training_on_a_cora_client_is_unchanged_by_the_cache(monkeypatch):
    """``train_local`` (FedAvg, FedProx, FedNTD, Ditto, local) on Cora, 3 Louvain clients:
    the same weights and loss, bit for bit, with and without the cache."""
    from bouquet.clients.base import ClientCall, model_to_arrays
    from bouquet.clients.training import train_local
    from bouquet.config import RunConfig
    from bouquet.models.nets import SAGE

    run = RunConfig.from_run_config({"method": "fedavg", "dataset": "cora"})
    data = ClientCall(cid=0, num_partitions=3, server_round=1, run=run, arrays={}).data

    def train():
        torch.manual_seed(0)
        model = SAGE(data.x.shape[1], data.num_classes)
        loss = train_local(model, data, epochs=2, batch_size=64, lr=0.05, seed=3)
        return {"loss": np.array(loss), **model_to_arrays(model)}

    cached, direct = _weights_after(monkeypatch, True, train), _weights_after(monkeypatch, False, train)
    assert cached.keys() == direct.keys()
    assert all(np.array_equal(cached[k], direct[k]) for k in cached)


def test_fedlog_training_on_a_cora_client_is_unchanged_by_the_cache(monkeypatch):
    """FedLoG's round 1 (pretraining + local training) on Cora, 3 Louvain clients."""
    from bouquet.clients.base import ClientCall, model_to_arrays
    from bouquet.clients.fedlog import FedLoGClient, FedLoGNet
    from bouquet.config import RunConfig

    run = RunConfig.from_run_config({"method": "fedlog", "dataset": "cora", "fedlog-pretrain-epochs": 3})
    probe = ClientCall(cid=1, num_partitions=3, server_round=1, run=run, arrays={})

    def train():
        torch.manual_seed(0)
        start = model_to_arrays(FedLoGNet(probe.data.x.shape[1], probe.data.num_classes, paper=False))
        reply = FedLoGClient().train(ClientCall(cid=1, num_partitions=3, server_round=1, run=run, arrays=start))
        return {**reply.arrays, **{"state." + k: v for k, v in reply.state.items()}}

    cached, direct = _weights_after(monkeypatch, True, train), _weights_after(monkeypatch, False, train)
    assert cached.keys() == direct.keys()
    assert all(np.array_equal(cached[k], direct[k]) for k in cached)
