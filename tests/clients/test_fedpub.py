import numpy as np
import torch
import torch.nn.functional as F

from bouquet.clients.base import ClientCall
from bouquet.clients.fedpub import FedPubClient, MaskedGCN, fedpub_loss, proxy_graph
from bouquet.config import RunConfig


def test_loss_is_ce_plus_l1_masks_plus_l2_distance_to_received():
    torch.manual_seed(0)
    model = MaskedGCN(4, 2)
    logits, y = torch.randn(3, 2), torch.tensor([0, 1, 1])
    received = {k: v.detach() + 0.5 for k, v in model.named_parameters()}
    got = fedpub_loss(model, logits, y, received, l1=0.01, loc_l2=0.1)
    masks = sum(p.abs().sum() for k, p in model.named_parameters() if k.endswith("mask"))
    dist = sum((p - received[k]).norm(2) for k, p in model.named_parameters() if not k.endswith("mask"))
    assert torch.isclose(got, F.cross_entropy(logits, y) + 0.01 * masks + 0.1 * dist)
    first_round = fedpub_loss(model, logits, y, None, l1=0.01, loc_l2=0.1)
    assert torch.isclose(first_round, F.cross_entropy(logits, y) + 0.01 * masks)


def test_the_released_codes_penalties_change_the_loss_value_but_not_the_gradient():
    """fedpub-faithful-to='code': the authors sum the terms over detached state_dict() tensors."""
    torch.manual_seed(0)
    model = MaskedGCN(6, 3)
    x, ei = torch.randn(10, 6), torch.randint(0, 10, (2, 30))
    y = torch.randint(0, 3, (10,))
    received = {k: (v + 0.1).detach() for k, v in model.named_parameters()}

    def grads(**kw):
        model.zero_grad()
        loss = fedpub_loss(model, model(x, ei), y, received, l1=0.01, loc_l2=0.1, **kw)
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}

    torch.manual_seed(1)
    code_loss, code = grads(penalties_train=False)
    torch.manual_seed(1)
    paper_loss, paper = grads(penalties_train=True)
    model.zero_grad()
    torch.manual_seed(1)
    F.cross_entropy(model(x, ei), y).backward()
    ce = {k: p.grad.clone() for k, p in model.named_parameters()}
    assert torch.isclose(code_loss, paper_loss)  # the same logged loss
    assert all(torch.equal(code[k], ce[k]) for k in ce)  # the gradient of cross-entropy alone
    # the paper's l1 term adds l1·sign(mask) = 0.01 to every mask's gradient
    assert torch.allclose(paper["conv1.mask"] - ce["conv1.mask"], torch.full_like(ce["conv1.mask"], 0.01), atol=1e-6)


def test_masks_stay_personal_and_proxy_is_shared():
    cfg = RunConfig.from_run_config({"method": "fedpub", "num-server-rounds": 2})
    init = {k: v.numpy() for k, v in MaskedGCN(1433, 7).state_dict().items()}
    call = ClientCall(cid=0, num_partitions=3, server_round=1, run=cfg, arrays=init, config={"server-round": 1})
    first = FedPubClient().train(call)
    assert {k for k in first.state if not k.startswith("optimizer/")} == {"conv1.mask", "conv2.mask", "clsif.mask"}
    assert first.extras["fedpub"]["embedding"].shape == (128,)
    foreign = {k: (np.zeros_like(v) if k.endswith("mask") else v) for k, v in first.arrays.items()}
    _, model = FedPubClient()._model(ClientCall(cid=0, num_partitions=3, server_round=2, run=cfg, arrays=foreign,
                                                state=first.state))
    np.testing.assert_array_equal(model.conv1.mask.detach().numpy(), first.state["conv1.mask"])
    a, b = proxy_graph(8, 2, seed=3), proxy_graph(8, 2, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].shape == (200, 8)
