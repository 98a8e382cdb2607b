"""GeFL / GeFL-F clients and the heterogeneous baselines (Kang et al., arXiv 2412.18460;
``utils/localUpdateTarget.py``, ``utils/localUpdateGen*.py`` of ``honggkang/hetero-model-fl-gen``).

A client trains only its own architecture m (node-config ``model-arch``, else the run's
``model-archs`` rule) and sends the whole bundle back with only ``arch{m}.`` (target phases) or
``gen.`` (generator phase) changed; the server uses only those (``bouquet.strategies.gefl``).

- ``generator`` phase: T_g = ``gefl-gen-epochs`` epochs of the generator on local images
  (GeFL-F: on the frozen first block's features), resuming this client's own Adam state.
- ``target`` phase: T_s = ``gefl-syn-epochs`` epoch of ⌊n/B⌋ batches of fresh generated samples
  with uniform labels (GeFL: the whole net; GeFL-F: the layers after the first block), then a new
  SGD and ``local-epochs`` epochs on real data (GeFL-F: first block frozen), each batch augmented
  as ``gefl-augment`` says (the code: random crop + flip on CIFAR-10, nothing on MNIST/FMNIST).
- Fix by default, released behaviour under ``gefl-released``: generated images are mapped
  into the range of the real ones (the released code feeds them raw, so MNIST+DCGAN and
  Fashion-MNIST+CVAE see two ranges), and FedProx's term is (mu/2)·‖w − w_t‖² (released: not squared).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bouquet import metrics as M
from bouquet.clients.base import ClientCall, ClientReply, arrays_to_model, model_to_arrays
from bouquet.clients.training import module_predictor, setting_scores
from bouquet.datasets import data_root, load_dataset
from bouquet.datasets.augment import augment
from bouquet.device import to_device
from bouquet.models.generators import DCGAN, from_unit, to_unit
from bouquet.models.hetero import HeteroBundle, arch_of, sub_state, to_side
from bouquet.seeding import derive_seed
from bouquet.strategies.gefl import MODEL_ARCH

Arrays = dict[str, np.ndarray]


def bundle_for(call: ClientCall) -> HeteroBundle:
    from bouquet.registry import get_method  # noqa: PLC0415 (the registry imports this module lazily)

    info = call.exported.info.stub() if call.data_path else load_dataset(call.run.dataset, data_root(call.run.data_dir))
    return arrays_to_model(get_method(call.run.method).model(call.run, info), call.arrays)


def client_arch(call: ClientCall) -> int:
    return call.node_arch if call.node_arch >= 0 else arch_of(call.cid, call.num_partitions, call.run.model_archs)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def optimizer_state(opt: torch.optim.Optimizer, prefix: str) -> Arrays:
    """Adam's moments and step per parameter, as arrays (kept in the client's state)."""
    out: Arrays = {}
    for i, st in opt.state_dict()["state"].items():
        for name, value in st.items():
            out[f"{prefix}.{i}.{name}"] = torch.as_tensor(value).detach().cpu().numpy().copy()
    return out


def load_optimizer_state(opt: torch.optim.Optimizer, state: Arrays, prefix: str) -> None:
    entries: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith(prefix + "."):
            i, name = key[len(prefix) + 1:].split(".", 1)
            entries.setdefault(int(i), {})[name] = torch.from_numpy(np.asarray(value).copy())
    if entries:
        sd = opt.state_dict()
        sd["state"] = entries
        opt.load_state_dict(sd)


def proximal_penalty(params, anchor: list[torch.Tensor], mu: float, released: bool) -> torch.Tensor:
    """FedProx's (mu/2)·‖w − w_t‖²; ``released``: the authors' (mu/2)·Σ_tensors ‖w − w_t‖₂, a sum of
    per-tensor norms, not squared (``LocalUpdate_fedprox``: ``(w - w_t).norm(2)`` per parameter).
    Its gradient at w = w_t (every local step 1) is 0 as with torch's norm, never 0/0."""
    if released:
        return mu / 2 * sum(torch.linalg.vector_norm(p - a) for p, a in zip(params, anchor))
    return mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))


def synthetic_logits(net, gen: nn.Module, sample: torch.Tensor, run) -> torch.Tensor:
    """A net's logits on generated samples, fed as GeFL feeds them: GeFL-F's feature samples
    through the layers after the first block; images mapped to [0, 1] and normalised like the
    real ones, or raw (the released code, ``gefl-released``)."""
    if run.method == "gefl-f":
        return net.header(sample)
    if run.gefl_released:
        return net(sample, normalised=True)
    return net(to_unit(sample, gen.data_range))


class GeFLClient:
    def train(self, call: ClientCall) -> ClientReply:
        torch.manual_seed(derive_seed(call.run.seed, call.server_round, call.cid, "gefl"))
        bundle, arch = bundle_for(call), client_arch(call)
        phase = str(call.config.get("phase", "target"))
        state = dict(call.state)
        own = sub_state(state, "own")
        if call.run.method == "hetero-local" and own:  # each client's model trained alone, never averaged
            arrays_to_model(bundle.arch(arch), own)
        if phase == "generator":
            loss, state = self.train_generator(call, bundle, arch, state)
        else:
            loss = self.train_target(call, bundle, arch, phase)
        if call.run.method == "hetero-local":
            state.update({f"own.{k}": v for k, v in model_to_arrays(bundle.arch(arch)).items()})
        arrays = model_to_arrays(bundle)
        metrics = {M.NUM_EXAMPLES: len(call.data.y_train), M.TRAIN_LOSS: loss, MODEL_ARCH: arch}
        return ClientReply(arrays, metrics, state)

    def evaluate(self, call: ClientCall) -> ClientReply:
        """This client's architecture, as the server now holds it, on the local splits."""
        net = bundle_for(call).arch(client_arch(call))
        scores = setting_scores(module_predictor(net), call.data, "global_model")
        return ClientReply({}, {M.NUM_EXAMPLES: len(call.data.y_train), **scores}, call.state)

    # --- phase 1: the federated generator ---------------------------------------------
    def train_generator(self, call: ClientCall, bundle: HeteroBundle, arch: int, state: Arrays) -> tuple[float, Arrays]:
        gen = bundle.gen
        gen.train()
        x_all = self._generator_inputs(call, bundle, arch)
        y_all = to_device(torch.from_numpy(call.data.y_train).long())
        order_gen = torch.Generator().manual_seed(derive_seed(call.run.seed, call.server_round, call.cid, "order"))
        losses = []
        if isinstance(gen, DCGAN):
            opt_g = torch.optim.Adam(gen.generator_parameters(), lr=2e-4, betas=(0.5, 0.999))
            opt_d = torch.optim.Adam(gen.discriminator_parameters(), lr=2e-4, betas=(0.5, 0.999))
            load_optimizer_state(opt_g, state, "opt-g")
            load_optimizer_state(opt_d, state, "opt-d")
            for _ in range(call.run.gefl_gen_epochs):
                for idx in _batches(len(y_all), call.run.batch_size, order_gen):
                    x, y = x_all[idx], y_all[idx]
                    fake_y = to_device(torch.randint(0, gen.num_classes, (len(y),)))
                    fake = gen.generate(to_device(torch.randn(len(y), gen.z_dim)), fake_y)
                    ones, zeros = torch.ones(len(y), device=y.device), torch.zeros(len(y), device=y.device)
                    d_loss = F.binary_cross_entropy(gen.discriminate(x, y), ones) + \
                        F.binary_cross_entropy(gen.discriminate(fake.detach(), fake_y), zeros)
                    opt_d.zero_grad()
                    d_loss.backward()
                    opt_d.step()
                    g_loss = F.binary_cross_entropy(gen.discriminate(fake, fake_y), ones)
                    opt_g.zero_grad()
                    g_loss.backward()
                    opt_g.step()
                    losses.append(float(g_loss.detach()))
            state = {**state, **optimizer_state(opt_g, "opt-g"), **optimizer_state(opt_d, "opt-d")}
        else:
            opt = torch.optim.Adam(gen.parameters(), lr=1e-3, weight_decay=1e-3)
            load_optimizer_state(opt, state, "opt-gen")
            for _ in range(call.run.gefl_gen_epochs):
                for idx in _batches(len(y_all), call.run.batch_size, order_gen):
                    loss = gen.loss(x_all[idx], y_all[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()) / len(idx))
            state = {**state, **optimizer_state(opt, "opt-gen")}
        return float(np.mean(losses)) if losses else float("nan"), state

    def _generator_inputs(self, call: ClientCall, bundle: HeteroBundle, arch: int) -> torch.Tensor:
        """GeFL: the local images at 32×32 in the generator's range; GeFL-F: the frozen first
        block's feature maps (>= 0). On the device, as the whole local split is."""
        x = to_device(torch.from_numpy(call.data.x_train))
        if call.run.method == "gefl-f":
            net = bundle.arch(arch).eval()
            with torch.no_grad():
                return torch.cat([net.fe(net.normalise(x[i:i + 512])) for i in range(0, len(x), 512)])
        return from_unit(to_side(x), bundle.gen.data_range)

    # --- phase 2: target training --------------------------------------------------------
    def train_target(self, call: ClientCall, bundle: HeteroBundle, arch: int, phase: str) -> float:
        method, run = call.run.method, call.run
        net = bundle.arch(arch)
        header_only = method == "gefl-f" and phase == "target"
        order_gen = torch.Generator().manual_seed(derive_seed(run.seed, call.server_round, call.cid, "order"))
        x_all = to_device(to_side(torch.from_numpy(call.data.x_train)))
        y_all = to_device(torch.from_numpy(call.data.y_train).long())
        params = [p for name, p in net.named_parameters() if not (header_only and name.startswith("fe."))]
        if method in ("gefl", "gefl-f") and phase == "target" and run.gefl_syn_epochs:
            self._synthetic_step(call, bundle, net, params, len(y_all), header_only)
        anchor = [p.detach().clone() for p in net.parameters()]
        soft = self._avgkd_targets(call, bundle, arch, x_all, y_all) if method == "avgkd" else None
        opt = torch.optim.SGD(params, lr=call.learning_rate, weight_decay=run.weight_decay)
        aug_gen = torch.Generator().manual_seed(derive_seed(run.seed, call.server_round, call.cid, "augment"))
        losses = []
        for _ in range(run.local_epochs):
            net.train()
            if header_only:
                net.fe.eval()
            for idx in _batches(len(y_all), run.batch_size, order_gen):
                logits = net(augment(x_all[idx], run.gefl_augment, aug_gen))
                if soft is not None:
                    loss = -(soft[idx] * F.log_softmax(logits, 1)).sum(1).mean()
                else:
                    loss = F.cross_entropy(logits, y_all[idx])
                if method == "hetero-fedprox":
                    loss = loss + proximal_penalty(net.parameters(), anchor, run.proximal_mu, run.gefl_released)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        return float(np.mean(losses)) if losses else float("nan")

    def _synthetic_step(self, call: ClientCall, bundle: HeteroBundle, net: nn.Module, params: list, n: int,
                        header_only: bool) -> None:
        gen = bundle.gen.eval()
        opt = torch.optim.SGD(params, lr=call.learning_rate)
        net.train()
        if header_only:
            net.fe.eval()
        b = call.run.batch_size
        for _ in range(call.run.gefl_syn_epochs):
            for _ in range(max(n // b, 1)):
                labels = to_device(torch.randint(0, gen.num_classes, (b,)))
                logits = synthetic_logits(net, gen, gen.sample(labels), call.run)
                loss = F.cross_entropy(logits, labels)
                opt.zero_grad()
                loss.backward()
                opt.step()

    def _avgkd_targets(self, call: ClientCall, bundle: HeteroBundle, arch: int, x: torch.Tensor,
                       y: torch.Tensor) -> torch.Tensor | None:
        """AvgKD (``LocalUpdate_avgKD``): from the second target round, soft labels
        softmax(onehot(y) + Σ_{m'≠m} softmax(f_m'(x))) from the other architectures' global weights."""
        if int(call.config.get("phase-round", 1)) < 2:
            return None
        total = F.one_hot(y, 10).float()
        with torch.no_grad():
            for m in range(bundle.num_archs):
                if m != arch:
                    other = bundle.arch(m).eval()
                    total += torch.cat([F.softmax(other(x[i:i + 1024]), 1) for i in range(0, len(x), 1024)])
        return F.softmax(total, 1)

