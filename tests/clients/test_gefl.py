"""GeFL clients: GeFL-F's frozen block, the generator's labels, Adam state across rounds,
the node's own architecture and the two fixes of the released code."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bouquet.clients.base import ClientCall
from bouquet.clients.gefl import GeFLClient, client_arch, load_optimizer_state, optimizer_state
from bouquet.config import RunConfig
from bouquet.datasets import data_root, load_dataset
from bouquet.registry import get_method


def _cfg(method, **kw):
    return RunConfig.from_run_config({"method": method, "dataset": "mnist", "partitioner": "iid", "data-fraction": 0.02,
                                      "num-server-rounds": 30, "gefl-fe-rounds": 1, "gefl-gen-rounds": 1,
                                      "learning-rate": 0.1, **kw})


def _bundle_arrays(cfg):
    torch.manual_seed(0)
    model = get_method(cfg.method).model(cfg, load_dataset("mnist", data_root("")))
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _call(cfg, arrays, phase, *, cid=0, n=3, state=None, node_arch=-1, rnd=2):
    return ClientCall(cid=cid, num_partitions=n, server_round=rnd, run=cfg, arrays=arrays,
                      config={"lr": cfg.learning_rate, "phase": phase, "phase-round": rnd}, state=state or {},
                      node_arch=node_arch)


def test_gefl_f_never_changes_the_frozen_first_block_after_warm_up():
    cfg = _cfg("gefl-f")
    arrays = _bundle_arrays(cfg)
    reply = GeFLClient().train(_call(cfg, arrays, "target", cid=1))
    fe = [k for k in arrays if k.startswith("arch1.fe.")]
    assert any("running_mean" in k for k in fe)  # BN statistics are part of the frozen block
    for k in fe:
        np.testing.assert_array_equal(reply.arrays[k], arrays[k])
    assert not np.array_equal(reply.arrays["arch1.fc.weight"], arrays["arch1.fc.weight"])  # the header trains
    warm = GeFLClient().train(_call(cfg, arrays, "warmup", cid=1))
    assert not np.array_equal(warm.arrays["arch1.fe.net.0.weight"], arrays["arch1.fe.net.0.weight"])


def test_a_client_changes_only_its_own_architecture_and_reports_it():
    cfg = _cfg("hetero-fedavg")
    arrays = _bundle_arrays(cfg)
    reply = GeFLClient().train(_call(cfg, arrays, "target", cid=2, node_arch=7))
    assert reply.metrics["model-arch"] == 7
    changed = {k.split(".")[0] for k in arrays if not np.array_equal(reply.arrays[k], arrays[k])}
    assert changed == {"arch7"}
    assert client_arch(_call(cfg, arrays, "target", cid=2)) == 2  # without a node setting: the paper's rule


def test_generator_round_keeps_each_clients_adam_state():
    cfg = _cfg("gefl", **{"gefl-gen-epochs": 1})
    arrays = _bundle_arrays(cfg)
    first = GeFLClient().train(_call(cfg, arrays, "generator", rnd=1))
    steps = [v for k, v in first.state.items() if k.endswith(".step")]
    assert steps and all(float(s) > 0 for s in steps)
    second = GeFLClient().train(_call(cfg, first.arrays, "generator", rnd=2, state=first.state))
    again = [v for k, v in second.state.items() if k.endswith(".step")]
    assert all(float(b) == 2 * float(a) for a, b in zip(steps, again))  # resumed, not restarted
    changed = {k.split(".")[0] for k in arrays if not np.array_equal(first.arrays[k], arrays[k])}
    assert changed == {"gen"}


def test_optimizer_state_round_trip():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.tensor([1.0, -2.0, 3.0])
    opt.step()
    saved = optimizer_state(opt, "x")
    other = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    load_optimizer_state(other, saved, "x")
    for name in ("exp_avg", "exp_avg_sq", "step"):
        np.testing.assert_array_equal(np.asarray(other.state_dict()["state"][0][name]), saved[f"x.0.{name}"])


@pytest.mark.parametrize("generator", ["cvae", "dcgan"])
def test_generated_samples_carry_the_labels_they_were_asked_for(generator):
    """A small generator trained on digits, judged by a classifier trained on real digits only:
    its samples of the requested classes are recognised far above chance (0.1)."""
    torch.manual_seed(0)
    cfg = _cfg("gefl", **{"gefl-generator": generator, "gefl-gen-epochs": 1, "gefl-gen-width": 4,
                          "data-fraction": 0.1})  # 4800 images, about 2000 Adam steps in all
    arrays, state = _bundle_arrays(cfg), {}
    for rnd in range(1, 31 if generator == "cvae" else 21):
        reply = GeFLClient().train(_call(cfg, arrays, "generator", cid=0, n=1, state=state, rnd=rnd))
        arrays, state = reply.arrays, reply.state
    data = load_dataset("mnist", data_root(""))
    x, y = torch.from_numpy(data.x_train[:2000]), torch.from_numpy(data.y_train[:2000]).long()
    bundle = get_method("gefl").model(cfg, data)
    bundle.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    judge = bundle.arch(4)
    opt = torch.optim.SGD(judge.parameters(), lr=0.1)
    for _ in range(15):
        for i in range(0, len(y), 64):
            loss = F.cross_entropy(judge(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    judge.eval()
    from bouquet.models.generators import to_unit

    labels = torch.arange(10).repeat(30)
    gen = bundle.gen.eval()
    with torch.no_grad():
        acc = float((judge(to_unit(gen.sample(labels), gen.data_range)).argmax(1) == labels).float().mean())
    assert acc > 0.5, acc


@pytest.mark.parametrize("value", ["x", 10, -2, 3.5])
def test_a_bad_node_config_architecture_is_refused_naming_the_key(value):
    from flwr.app import Context, RecordDict

    from bouquet.client_app import _node_arch

    context = Context(run_id=1, node_id=1, node_config={"model-arch": value}, state=RecordDict(), run_config={})
    with pytest.raises(ValueError, match="model-arch"):
        _node_arch(context)


def test_fedprox_term_is_squared_unless_the_released_switch_is_on():
    from bouquet.clients.gefl import proximal_penalty

    w, anchor = [torch.tensor([3.0, 1.0]), torch.tensor([[4.0]])], [torch.tensor([0.0, 1.0]), torch.tensor([[0.0]])]
    assert float(proximal_penalty(w, anchor, 2.0, released=False)) == pytest.approx(25.0)  # (2/2)·(9 + 16)
    # the released code sums each tensor's own L2 norm: (2/2)·(‖(3, 0)‖ + ‖4‖) = 7, not (2/2)·√25
    assert float(proximal_penalty(w, anchor, 2.0, released=True)) == pytest.approx(7.0)


@pytest.mark.parametrize("released", [False, True])
def test_fedprox_term_has_a_finite_zero_gradient_where_the_local_model_is_the_global_one(released):
    """Local step 1 starts at w = w_t; a sqrt of the summed squares there gives 0/0 = NaN, which made every
    released-FedProx reply non-finite (all rejected, the run failed)."""
    from bouquet.clients.gefl import proximal_penalty

    w = [torch.tensor([3.0, 1.0], requires_grad=True), torch.tensor([[4.0]], requires_grad=True)]
    proximal_penalty(w, [p.detach().clone() for p in w], 0.01, released=released).backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in w)


def test_gefl_augment_is_validated_and_changes_only_the_real_batches():
    from bouquet.config import ConfigError

    with pytest.raises(ConfigError, match="gefl-augment"):
        _cfg("hetero-fedavg", **{"gefl-augment": "mixup"})
    with pytest.raises(ConfigError, match="gefl-augment='crop-flip' with method='fedavg'"):
        RunConfig.from_run_config({"method": "fedavg", "gefl-augment": "crop-flip"})
    plain, aug = _cfg("hetero-fedavg"), _cfg("hetero-fedavg", **{"gefl-augment": "crop-flip"})
    arrays = _bundle_arrays(plain)
    runs = [GeFLClient().train(_call(c, arrays, "target", cid=1)).arrays["arch1.fc.weight"] for c in (plain, plain, aug, aug)]
    np.testing.assert_array_equal(runs[0], runs[1])  # deterministic either way
    np.testing.assert_array_equal(runs[2], runs[3])
    assert not np.array_equal(runs[0], runs[2])  # the augmented batches train differently
