"""FedLoG client (Kim et al., "Subgraph Federated Learning for Local Generalization", ICLR 2025).

A GraphSAGE embedder classifies nodes by squared distance to class prototypes, which are the
class means of embedded *learnable synthetic nodes*: a head set and a tail set, mixed per node
by degree. From round 2 on, the server's global synthetic nodes (condensed from all clients'
head sets) are learned too, after per-class feature scaling and with a generated "prompt"
neighbour. Follows the authors' released code (shared/reference/fedlog-gefl.md §1.5);
``fedlog-faithful-to='paper'`` switches the code's two model bugs to the paper's intent:

* task adaptation g: code = LayerNorm only (the EGNN update on queries is zero);
  paper = LayerNorm then two coordinate updates of the query toward the synthetic nodes;
* prompt generator: code = a fixed random tanh-MLP per class (never trained, dropout on);
  paper = the same MLPs trained on the client to predict a node's mean neighbour features.

The synthetic nodes, γ and the prompt generators stay on the client (its state); the shared
modules travel as ``arrays``; the head synthetic nodes and class proportions go up as the
``fedlog`` record, the global synthetic nodes come down as ``fedlog-global``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn.models import GraphSAGE
from torch_geometric.utils import degree, scatter

from bouquet import metrics as M
from bouquet.clients.base import Arrays, ClientCall, ClientReply, arrays_to_model, model_to_arrays
from bouquet.clients.training import setting_scores
from bouquet.datasets import GraphClientData
from bouquet.device import to_device, to_numpy
from bouquet.models import sage_cache
from bouquet.seeding import derive_seed

HIDDEN, EMBED = 128, 64
UPLOAD, GLOBAL = "fedlog", "fedlog-global"
GAMMA_STEP, GAMMA_ACC = 0.001, 0.8


class QueryAdapter(nn.Module):
    """g(·): LayerNorm, plus (paper mode) EGNN-style moves of each query toward the synthetic
    embeddings, weighted by an MLP of their squared distance."""

    def __init__(self, dim: int, moves: bool, layers: int = 2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.moves = nn.ModuleList(
            nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, 1)) for _ in range(layers if moves else 0)
        )

    def forward(self, h: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
        h = self.norm(h)
        for move in self.moves:
            diff = synthetic.unsqueeze(0) - h.unsqueeze(1)  # (B, M, d)
            weight = move(diff.pow(2).sum(-1, keepdim=True))  # (B, M, 1)
            h = h + (diff * weight).mean(1)
        return h


class FedLoGNet(nn.Module):
    """The shared modules (averaged uniformly on the server)."""

    def __init__(self, in_features: int, num_classes: int, paper: bool) -> None:
        super().__init__()
        self.embedder = GraphSAGE(in_features, HIDDEN, num_layers=2, out_channels=EMBED, dropout=0.5)
        self.classifier = nn.Linear(EMBED, num_classes)  # round-1 pretraining only
        self.head = QueryAdapter(EMBED, moves=paper)
        self.tail = QueryAdapter(EMBED, moves=paper)


def self_loops(n: int, device: torch.device) -> torch.Tensor:
    """Synthetic nodes are embedded alone: identity adjacency, as the authors' SparseTensor.eye."""
    idx = torch.arange(n, device=device)
    return torch.stack([idx, idx])


def prototypes(net: FedLoGNet, synthetic: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(embedded synthetic nodes, class-mean prototypes); rows are class-major (c, j)."""
    z = net.embedder(synthetic, self_loops(len(synthetic), synthetic.device))
    return z, z.view(num_classes, -1, z.shape[-1]).mean(1)


def degree_weight(edge_index: torch.Tensor, num_nodes: int, tau: float) -> torch.Tensor:
    """α_v = σ(deg(v) − (τ+1)): how much node v trusts the head (high-degree) branch."""
    return torch.sigmoid(degree(edge_index[0], num_nodes) - (tau + 1.0))


def sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)


def branch_log_probs(net: FedLoGNet, h: torch.Tensor, head: tuple, tail: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """log-softmax over classes of −‖g(h) − p_c‖² for the head and the tail branch."""
    (zh, ph), (zt, pt) = head, tail
    lh = F.log_softmax(-sq_dist(net.head(h, zh), ph), dim=1)
    lt = F.log_softmax(-sq_dist(net.tail(h, zt), pt), dim=1)
    return lh, lt


def mixed_log_probs(lh: torch.Tensor, lt: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Training output: α·log p^H + (1−α)·log p^T (the code's mixing, not a log of a mixture)."""
    a = alpha.unsqueeze(1)
    return a * lh + (1 - a) * lt


def mixed_probs(lh: torch.Tensor, lt: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Prediction: α·softmax^H + (1−α)·softmax^T."""
    a = alpha.unsqueeze(1)
    return a * lh.exp() + (1 - a) * lt.exp()


def update_gamma(gamma: torch.Tensor, correct: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-class feature-scaling strength: +0.001 where the model gets > 80 % of that class's
    global synthetic nodes right, −0.001 elsewhere, clipped to [0, 1]."""
    num_classes = len(gamma)
    acc = scatter(correct.float(), labels, dim=0, dim_size=num_classes, reduce="mean")
    return (gamma + torch.where(acc > GAMMA_ACC, GAMMA_STEP, -GAMMA_STEP)).clamp(0.0, 1.0)


def scale_features(x: torch.Tensor, labels: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """x̃_i = x_i + γ_{y_i}·(μ − x_i), μ the mean of all global synthetic nodes."""
    return x + gamma[labels].unsqueeze(1) * (x.mean(0, keepdim=True) - x)


def prompt_generators(in_features: int, num_classes: int, seed: int) -> nn.ModuleList:
    """One F→256→512→F tanh MLP per class, initialised identically on every client; one
    dropout, before the output layer, as the authors' ``Gen`` has it."""
    torch.manual_seed(seed)
    return nn.ModuleList(
        nn.Sequential(nn.Linear(in_features, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Dropout(0.5),
                      nn.Linear(512, in_features), nn.Tanh())
        for _ in range(num_classes)
    )


def generate_neighbours(gens: nn.ModuleList, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for c, gen in enumerate(gens):
        rows = labels == c
        if rows.any():
            out[rows] = gen(x[rows])
    return out


def pair_graph(x: torch.Tensor, neighbours: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each node with its generated neighbour as a 2-node graph (bidirectional edge), batched."""
    m = len(x)
    idx = torch.arange(m, device=x.device)
    edges = torch.cat([torch.stack([idx, idx + m]), torch.stack([idx + m, idx])], dim=1)
    return torch.cat([x, neighbours]), edges


def neighbour_means(data: GraphClientData) -> torch.Tensor:
    src, dst = data.edge_index
    return scatter(data.x[src], dst, dim=0, dim_size=data.num_nodes, reduce="mean")


class FedLoGClient:
    """FedLoG's local step as a pure function of (call) -> reply."""

    def _setup(self, call: ClientCall):
        data = call.data
        if not isinstance(data, GraphClientData):
            raise ValueError(f"method='fedlog' needs a graph dataset, got dataset={call.run.dataset!r}")
        paper = call.run.fedlog_faithful_to == "paper"
        c, f, s = data.num_classes, data.x.shape[1], call.run.fedlog_num_proto
        net = FedLoGNet(f, c, paper)
        net = arrays_to_model(net, call.arrays) if call.arrays else to_device(net)
        state = call.state
        if "syn_head" in state:
            syn_h = torch.from_numpy(state["syn_head"].copy())
            syn_t = torch.from_numpy(state["syn_tail"].copy())
            gamma = torch.from_numpy(state["gamma"].copy())
        else:  # identical start on every client, as the authors' single pickled Client
            torch.manual_seed(derive_seed(call.run.seed, "fedlog-synthetic"))
            syn_h, syn_t = torch.empty(c * s, f), torch.empty(c * s, f)
            nn.init.xavier_uniform_(syn_h)
            nn.init.xavier_uniform_(syn_t)
            gamma = torch.zeros(c)
        syn_h, syn_t, gamma = (to_device(t) for t in (syn_h, syn_t, gamma))  # drawn on the CPU either way
        return data, net, syn_h.requires_grad_(), syn_t.requires_grad_(), gamma, paper

    def _prompt_generators(self, call: ClientCall, in_features: int, num_classes: int) -> nn.ModuleList:
        """Only training needs them: seeded (code mode) or restored from state (paper mode)."""
        gens = prompt_generators(in_features, num_classes, derive_seed(call.run.seed, "fedlog-prompt"))
        saved = {k[4:]: torch.from_numpy(v.copy()) for k, v in call.state.items() if k.startswith("gen.")}
        if saved:
            gens.load_state_dict(saved)
        return to_device(gens)

    def predictor(self, net: FedLoGNet, syn_h: torch.Tensor, syn_t: torch.Tensor, num_classes: int, tau: float):
        net.eval()
        with torch.no_grad():
            head, tail = prototypes(net, syn_h, num_classes), prototypes(net, syn_t, num_classes)

        def predict(x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
            lh, lt = branch_log_probs(net, net.embedder(x, edge_index), head, tail)
            return mixed_probs(lh, lt, degree_weight(edge_index, len(x), tau))

        return predict

    def train(self, call: ClientCall) -> ClientReply:
        data, net, syn_h, syn_t, gamma, paper = self._setup(call)
        run, c = call.run, data.num_classes
        gens = self._prompt_generators(call, data.x.shape[1], c)
        seed = derive_seed(run.seed, call.server_round, call.cid)
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        if "syn_head" not in call.state and run.fedlog_pretrain_epochs > 0:
            pretrain(net, data, run.fedlog_pretrain_epochs, run.batch_size, run.fedlog_lr, gen, as_code=not paper)
        if paper:
            train_prompt_generators(gens, data, run.fedlog_lr, gen)
        glob = call.extras.get(GLOBAL)
        x_glob = None if glob is None else to_device(torch.from_numpy(glob["x"].copy()))
        y_glob = None if glob is None else to_device(torch.from_numpy(glob["y"].copy()).long())
        opt = torch.optim.Adam(net.parameters(), lr=run.fedlog_lr, weight_decay=5e-4)
        opt_h = torch.optim.Adam([syn_h], lr=run.fedlog_lr)
        opt_t = torch.optim.Adam([syn_t], lr=run.fedlog_lr)
        alpha = degree_weight(data.edge_index, data.num_nodes, run.fedlog_tau)
        embed = sage_cache.cached(net.embedder, data.x, data.edge_index)
        train_idx = data.train_mask.nonzero().flatten()
        losses = []
        net.train()
        for _ in range(run.local_epochs):
            order = train_idx[torch.randperm(len(train_idx), generator=gen)]
            for batch in epoch_batches(order, run.batch_size):
                head, tail = prototypes(net, syn_h, c), prototypes(net, syn_t, c)
                h = embed(net.embedder)
                lh, lt = branch_log_probs(net, h[batch], head, tail)
                loss = F.nll_loss(mixed_log_probs(lh, lt, alpha[batch]), data.y[batch])
                loss = loss + run.fedlog_norm_weight * (syn_h.norm() + syn_t.norm())
                if x_glob is not None:
                    with torch.no_grad():
                        gens.train(not paper)  # code: the random generator runs with dropout on
                        x_scaled = scale_features(x_glob, y_glob, gamma)
                        nodes, edges = pair_graph(x_scaled, generate_neighbours(gens, x_scaled, y_glob))
                    h_glob = net.embedder(nodes, edges)[: len(x_glob)]
                    gh, gt = branch_log_probs(net, h_glob, head, tail)
                    logp = 0.5 * gh + 0.5 * gt
                    loss = loss + F.nll_loss(logp, y_glob)
                    gamma = update_gamma(gamma, logp.argmax(1) == y_glob, y_glob)
                opt.zero_grad()
                opt_h.zero_grad()
                opt_t.zero_grad()
                loss.backward()
                opt.step()
                opt_h.step()
                opt_t.step()
                losses.append(loss.item())
        predict = self.predictor(net, syn_h.detach(), syn_t.detach(), c, run.fedlog_tau)
        scores = setting_scores(predict, data, "local_model", call.new_client)
        counts = np.bincount(to_numpy(data.y[data.train_mask]), minlength=c).astype(np.float32)
        state = {"syn_head": to_numpy(syn_h), "syn_tail": to_numpy(syn_t), "gamma": to_numpy(gamma)}
        if paper:
            state.update({"gen." + k: v for k, v in model_to_arrays(gens).items()})
        metrics = {
            M.NUM_EXAMPLES: int(data.train_mask.sum()),
            "fedlog-uniform": 1.0,  # the server averages the shared modules unweighted
            M.TRAIN_LOSS: float(np.mean(losses)) if losses else float("nan"),
            "fedlog_gamma_mean": float(gamma.mean()),
            **scores,
        }
        head = to_numpy(syn_h)
        upload = {"syn_head": head, "head_means": head.reshape(c, -1, head.shape[-1]).mean(1),
                  "class_share": counts / max(counts.sum(), 1.0)}
        return ClientReply(model_to_arrays(net), metrics, state, extras={UPLOAD: upload})

    def evaluate(self, call: ClientCall) -> ClientReply:
        """The averaged modules with this client's own synthetic nodes."""
        data, net, syn_h, syn_t, _, _ = self._setup(call)
        predict = self.predictor(net, syn_h.detach(), syn_t.detach(), data.num_classes, call.run.fedlog_tau)
        scores = setting_scores(predict, data, "global_model")
        return ClientReply({}, {M.NUM_EXAMPLES: int(data.train_mask.sum()), **scores}, call.state)


def epoch_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """One epoch as the authors' code has it: max(⌊n/B⌋, 1) batches of a shuffled order, the
    remainder dropped, and a client with fewer than B training nodes trains on all of them as
    one batch (none: no batch)."""
    if len(order) == 0:
        return []
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(max(len(order) // batch_size, 1))]


def pretrain(net: FedLoGNet, data: GraphClientData, epochs: int, batch_size: int, lr: float,
             gen: torch.Generator, patience: int = 10, as_code: bool = True) -> None:
    """Round 1: embedder + linear classifier with cross-entropy, stopped after ``patience``
    epochs without a better *validation* accuracy (the authors stop on test accuracy; we do not
    look at test labels). ``as_code`` (``fedlog-faithful-to='code'``): the authors' loop, whose
    model keeps its last epoch's weights (the best ones only went to their server's dictionary),
    a tie counts as better, and an epoch is :func:`epoch_batches`; otherwise every batch, the
    remainder too, and the best validation state restored."""
    opt = torch.optim.Adam(list(net.embedder.parameters()) + list(net.classifier.parameters()), lr=lr, weight_decay=5e-4)
    train_idx = data.train_mask.nonzero().flatten()
    embed = sage_cache.cached(net.embedder, data.x, data.edge_index)
    best, best_state, waited = -1.0, None, 0
    for _ in range(epochs):
        net.train()
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        for batch in epoch_batches(order, batch_size) if as_code else order.split(batch_size):
            loss = F.cross_entropy(net.classifier(embed(net.embedder)[batch]), data.y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            pred = net.classifier(embed(net.embedder)).argmax(1)
        acc = float((pred[data.val_mask] == data.y[data.val_mask]).float().mean()) if data.val_mask.any() else 0.0
        if acc > best or (as_code and acc == best):
            best, waited = acc, 0
            if not as_code:
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)


def train_prompt_generators(gens: nn.ModuleList, data: GraphClientData, lr: float, gen: torch.Generator,
                            epochs: int = 5) -> None:
    """Paper mode: class-c generator learns to predict the mean neighbour features of the
    client's labelled class-c training nodes (the NeighGen objective without gradient matching)."""
    target = neighbour_means(data)
    has_nb = degree(data.edge_index[1], data.num_nodes) > 0
    rows = (data.train_mask & has_nb).nonzero().flatten()
    opt = torch.optim.Adam(gens.parameters(), lr=lr)
    gens.train()
    for _ in range(epochs):
        rows = rows[torch.randperm(len(rows), generator=gen)]
        loss = F.mse_loss(generate_neighbours(gens, data.x[rows], data.y[rows]), target[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()


def condense(uploads: list[Arrays], num_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Server: global synthetic nodes from the clients' head synthetic nodes.

    X^g[c, j] = Σ_k w_kc · S^H_k[c, π_k(j)], with w_kc = r_kc / Σ_j r_jc (r = class shares;
    a class absent everywhere gets 1/K) and one random permutation π_k of the s index per
    client, shared by all classes. Returns (X^g as (C·s, F), labels y^g).
    """
    k = len(uploads)
    shares = np.stack([u["class_share"].astype(np.float64) for u in uploads])  # (K, C)
    totals = shares.sum(0)
    weights = np.where(totals > 0, shares / np.where(totals > 0, totals, 1.0), 1.0 / k)  # (K, C)
    syn = [u["syn_head"].reshape(num_classes, -1, u["syn_head"].shape[-1]).astype(np.float64) for u in uploads]
    s = syn[0].shape[1]
    out = np.zeros_like(syn[0])
    for w, nodes in zip(weights, syn, strict=True):
        out += w[:, None, None] * nodes[:, rng.permutation(s), :]
    labels = np.repeat(np.arange(num_classes), s)
    return out.reshape(num_classes * s, -1).astype(np.float32), labels.astype(np.int64)
