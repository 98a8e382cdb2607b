"""Federated generalized category discovery: FedLPA (NeurIPS 2025, OpenReview QzOBE4mi2N; no public
code) on a SimGCD base (Wen et al., ICCV 2023, ``CVMI-Lab/SimGCD``), and its baselines.

Every client holds images of all classes; the first ``gcd-known-classes`` classes are *known* and a
seeded ``gcd-labelled-fraction`` of their images carry labels, everything else (the rest of the known
classes and every image of the novel ones) is unlabelled, and the number of novel classes is not told
to the client. Methods (``bouquet.registry``):

- ``simgcd``: FedAvg of a SimGCD model (backbone + projector + cosine classifier) trained with SimGCD's
  losses (§1.3 of the reference notes): CE and SupCon on labelled samples, SimCLR on all, cross-view
  self-distillation with a sharpened detached teacher, and the mean-entropy regulariser.
- ``gcd``: FedAvg of GCD (Vaze et al., CVPR 2022): SupCon + SimCLR features, predictions by
  semi-supervised k-means on the client's data (labelled samples fixed to their classes).
- ``local-simgcd``: SimGCD on each client alone after the shared warm-up (never averaged again).
- ``fedlpa``: SimGCD whose mean-entropy term is replaced, after ``fedlpa-warmup-rounds``, by Local Prior
  Alignment: every ``fedlpa-every`` rounds the client embeds its data, builds a kNN cosine graph, drops the
  edges its confident predictions contradict (CLSD), runs InfoMap, and sets an empirical prior π from the
  concept sizes; the batch-mean prediction is then aligned with π.

Every method starts with the same ``gcd-ssl-rounds`` rounds of federated SimCLR (no labels), so the
backbone they start GCD training from is identical for one seed: no pretrained weights exist here.

The math is plain PyTorch in small functions (tested without Flower); the client classes at the end
adapt them to :class:`bouquet.clients.base.ClientCall`. Guesses of the reconstruction are run-config
keys (``fedlpa-*``); each function says which.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bouquet import metrics as M
from bouquet.clients.base import ClientCall, ClientReply, arrays_to_model, model_to_arrays
from bouquet.device import to_device
from bouquet.seeding import derive_seed

# SimGCD's constants (CVMI-Lab/SimGCD train.py / model.py)
STUDENT_TEMP = 0.1  # logits / 0.1 for the student and the cross-entropy
TEACHER_TEMPS = (0.07, 0.04)  # teacher temperature, warmed linearly over the first 30 epochs
TEACHER_WARMUP_EPOCHS = 30
SUPCON_TEMP = 0.07
UNSUP_TEMP = 1.0  # info_nce_logits' default, as SimGCD calls it
PRIOR_FLOOR = 0.01  # π is mixed with 1 % uniform so KL stays finite for heads no local concept maps to
STATE_PRIOR, STATE_ROUND, STATE_K = "fedlpa/prior", "fedlpa/round", "fedlpa/estimated-k"
LOCAL_PREFIX = "model/"  # local-simgcd: the client's own model in its state


# --- the model ----------------------------------------------------------------------------------

class GCDNet(nn.Module):
    """Small CNN backbone + SimGCD head, sized for 2 CPU cores.

    Backbone: three conv3×3 blocks (w, 2w, 4w channels; GroupNorm, ReLU, 2×2 max-pool) and a linear
    map of the last feature map to a 4w feature. Head (SimGCD's ``DINOHead`` shrunk): a 2-layer
    projector (4w → 8w → 2w) for the contrastive losses and a cosine classifier (weight-normalised, no
    bias) on the L2-normalised feature. With w = 32 (``gcd-width``) and 10 outputs: 291k parameters
    and 7.6M MACs per 28×28×1 image, 407k and 10.6M per 32×32×3; w = 16: 74k / 2.0M and 102k / 2.9M
    (GroupNorm has no running statistics, so FedAvg averages every entry of the state dict)."""

    def __init__(self, in_channels: int, num_outputs: int, width: int = 32, side: int = 32) -> None:
        super().__init__()
        chans = (in_channels, width, 2 * width, 4 * width)
        blocks = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            blocks += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.ReLU(), nn.MaxPool2d(2)]
        last = side // 8  # 3 for 28×28, 4 for 32×32
        # a linear map of the last feature map, not a global average: after GroupNorm every channel's
        # spatial mean is nearly a constant, so pooled features would hardly differ between images
        self.backbone = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(4 * width * last * last, 4 * width))
        self.feature_dim = 4 * width
        self.projector = nn.Sequential(nn.Linear(4 * width, 8 * width), nn.ReLU(), nn.Linear(8 * width, 2 * width))
        self.classifier = nn.Parameter(torch.randn(num_outputs, 4 * width) * 0.1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def project(self, feat: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(feat), dim=1)

    def classify(self, feat: torch.Tensor) -> torch.Tensor:
        """Cosine similarities to the class weights (SimGCD's weight-normalised last layer with
        weight_g fixed to 1); the losses divide them by their temperatures."""
        return F.normalize(feat, dim=1) @ F.normalize(self.classifier, dim=1).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: the cosines / 0.1."""
        return self.classify(self.features(x)) / STUDENT_TEMP


def new_model(call: ClientCall) -> GCDNet:
    """This run's GCDNet (``bouquet.registry``'s model for the GCD methods), with fresh weights."""
    from bouquet.datasets import data_root, load_dataset  # noqa: PLC0415
    from bouquet.registry import get_method  # noqa: PLC0415

    data = call.exported.info.stub() if call.data_path else load_dataset(call.run.dataset, data_root(call.run.data_dir))
    return get_method(call.run.method).model(call.run, data)


def head_size(run, num_classes: int) -> int:
    """``gcd-head-size`` (0 = the true number of classes, SimGCD's known K)."""
    return run.gcd_head_size or num_classes


# --- augmentation ---------------------------------------------------------------------------------

def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random view per image, vectorised: random resized crop (scale 0.5–1 of the side, aspect
    3/4–4/3), horizontal flip, brightness/contrast jitter, and for colour images random grayscale
    (p = 0.2). A CPU stand-in for SimCLR's augmentations; draws come from ``gen`` (CPU)."""
    n, c = x.shape[:2]
    rand = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    scale = 0.5 + 0.5 * rand(n)
    aspect = torch.exp((rand(n) - 0.5) * 2 * math.log(4 / 3))
    sx, sy = (scale * aspect.sqrt()).clamp(max=1.0), (scale / aspect.sqrt()).clamp(max=1.0)
    tx, ty = (rand(n) * 2 - 1) * (1 - sx), (rand(n) * 2 - 1) * (1 - sy)
    flip = torch.where(rand(n) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * flip, tx, sy, ty
    bright, contrast = 0.6 + 0.8 * rand(n, 1, 1, 1), 0.6 + 0.8 * rand(n, 1, 1, 1)
    gray = rand(n, 1, 1, 1) < 0.2
    x = to_device(x)
    grid = F.affine_grid(to_device(theta), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * to_device(contrast) + mean) * to_device(bright)
    if c == 3:
        out = torch.where(to_device(gray), out.mean(1, keepdim=True).expand_as(out), out)
    return out.clamp(0.0, 1.0)


# --- losses (SimGCD's, from CVMI-Lab/SimGCD) ------------------------------------------------------

def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent between two views of L2-normalised projections (SimGCD's ``info_nce_logits``
    + cross-entropy): each sample's positive is its other view, the other 2B − 2 are negatives."""
    z = torch.cat([z1, z2])
    n = len(z1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def supcon(z1: torch.Tensor, z2: torch.Tensor, y: torch.Tensor, temperature: float = SUPCON_TEMP) -> torch.Tensor:
    """SupConLoss (Khosla et al.; SimGCD's ``SupConLoss``, base temperature = temperature): for every
    anchor, the mean log-probability of all other views of its class."""
    z, labels = torch.cat([z1, z2]), torch.cat([y, y])
    if len(z) < 2:
        return z.sum() * 0.0
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    count = pos.sum(1)
    keep = count > 0
    if not keep.any():
        return z.sum() * 0.0
    mean_pos = log_prob.masked_fill(~pos, 0.0).sum(1)[keep] / count[keep]
    return -mean_pos.mean()


def distill(student: list[torch.Tensor], teacher_probs: list[torch.Tensor]) -> torch.Tensor:
    """SimGCD's ``DistillLoss``: for each pair of *different* views, −Σ q_teacher · log softmax(student
    / 0.1), averaged over pairs (the teacher is the same network, detached, sharpened)."""
    total, pairs = 0.0, 0
    for i, q in enumerate(teacher_probs):
        for j, s in enumerate(student):
            if i != j:
                total = total + torch.sum(-q * F.log_softmax(s / STUDENT_TEMP, dim=-1), dim=-1).mean()
                pairs += 1
    return total / pairs


def mean_entropy_term(mean_prob: torch.Tensor) -> torch.Tensor:
    """SimGCD's ``me_max_loss``: −H(p̄) + log K = KL(p̄ ‖ uniform)."""
    p = mean_prob.clamp_min(1e-12)
    return torch.sum(p * torch.log(p)) + math.log(float(len(p)))


def prior_alignment(mean_prob: torch.Tensor, prior: torch.Tensor, direction: str = "mean-prior") -> torch.Tensor:
    """Local Prior Alignment (``fedlpa-kl``, a guess of the reconstruction): ``mean-prior`` (default) =
    KL(p̄ ‖ π), which equals :func:`mean_entropy_term` for a uniform π (SimGCD is LPA with π uniform);
    ``prior-mean`` = KL(π ‖ p̄), mass-covering: each client asks the model to cover its own concepts and
    does not push the outputs it has no concept for toward 0 (KL(p̄ ‖ π) does, on every client; under
    label skew that can starve the novel outputs of the averaged model: docs/results/fedlpa.md)."""
    p, q = mean_prob.clamp_min(1e-12), prior.to(mean_prob).clamp_min(1e-12)
    if direction == "mean-prior":
        return torch.sum(p * (torch.log(p) - torch.log(q)))
    if direction == "prior-mean":
        return torch.sum(q * (torch.log(q) - torch.log(p)))
    raise ValueError(f"fedlpa-kl={direction!r}: choose mean-prior or prior-mean")


def teacher_temperature(epoch: int) -> float:
    """SimGCD's schedule: ``np.linspace(0.07, 0.04, 30)[epoch]`` for its first 30 epochs (0.04 at
    epoch 29), then 0.04."""
    lo, hi = TEACHER_TEMPS
    return hi if epoch >= TEACHER_WARMUP_EPOCHS - 1 else lo + (hi - lo) * epoch / (TEACHER_WARMUP_EPOCHS - 1)


def simgcd_loss(logits: list[torch.Tensor], proj: list[torch.Tensor], y: torch.Tensor, labelled: torch.Tensor,
                tau_teacher: float, sup_weight: float, memax_weight: float,
                prior: torch.Tensor | None = None, direction: str = "mean-prior") -> torch.Tensor:
    """SimGCD's batch loss over two views: (1−λ)(distill + w·me-max) + λ·CE + (1−λ)·SimCLR + λ·SupCon.
    With ``prior`` (FedLPA) the me-max term becomes w·:func:`prior_alignment` (p̄, π)."""
    lam = sup_weight
    teacher = [F.softmax(z.detach() / tau_teacher, dim=-1) for z in logits]
    cluster = distill(logits, teacher)
    mean_prob = torch.cat([F.softmax(z / STUDENT_TEMP, dim=-1) for z in logits]).mean(0)
    reg = mean_entropy_term(mean_prob) if prior is None else prior_alignment(mean_prob, prior, direction)
    cluster = cluster + memax_weight * reg
    unsup = info_nce(proj[0], proj[1], UNSUP_TEMP)
    if labelled.any():
        cls = torch.stack([F.cross_entropy(z[labelled] / STUDENT_TEMP, y[labelled]) for z in logits]).mean()
        sup = supcon(proj[0][labelled], proj[1][labelled], y[labelled])
    else:
        cls = sup = logits[0].sum() * 0.0
    return (1 - lam) * cluster + lam * cls + (1 - lam) * unsup + lam * sup


def gcd_loss(proj: list[torch.Tensor], y: torch.Tensor, labelled: torch.Tensor, sup_weight: float) -> torch.Tensor:
    """GCD (Vaze et al.): (1−λ)·SimCLR on all + λ·SupCon on the labelled samples."""
    unsup = info_nce(proj[0], proj[1], UNSUP_TEMP)
    sup = supcon(proj[0][labelled], proj[1][labelled], y[labelled]) if labelled.any() else unsup * 0.0
    return (1 - sup_weight) * unsup + sup_weight * sup


# --- clustering: semi-supervised k-means (GCD), kNN graph + confidence rule + InfoMap (FedLPA) ----

def ss_kmeans(feats: torch.Tensor, k: int, labels: torch.Tensor | None = None, labelled: torch.Tensor | None = None,
              iters: int = 30, seed: int = 0, inits: int = 10, return_inertia: bool = False):
    """GCD's semi-supervised k-means on L2-normalised features: labelled samples stay in their class's
    cluster (classes 0..; their means start those centroids), the other centroids start by k-means++
    over the unlabelled samples. Without labels it is plain k-means(++). As GCD's ``fit_mix``, ``inits``
    starts (GCD: 10), keeping the assignment of lowest inertia (squared distances to the centroids,
    labelled samples to their class's) seen in any iteration. Returns a cluster per sample (and that
    inertia with ``return_inertia``)."""
    x = F.normalize(feats.float(), dim=1).cpu()
    n = len(x)
    gen = torch.Generator().manual_seed(seed)
    lab = torch.zeros(n, dtype=torch.bool) if labelled is None else labelled.cpu().bool()
    ylab = labels.cpu()[lab] if lab.any() else torch.zeros(0, dtype=torch.long)
    known = [c for c in range(k) if bool((ylab == c).any())]  # classes with labelled samples
    fixed = {c: i for i, c in enumerate(known)}  # class -> its centroid's index
    fixed_assign = torch.tensor([fixed[int(v)] for v in ylab], dtype=torch.long)
    pool = x[~lab] if (~lab).any() else x
    # a known class's centroid answers with the class index; the others take the remaining ids in order
    ids = torch.tensor(known + [i for i in range(k) if i not in fixed])[: min(k, n)]
    best, best_inertia = torch.zeros(n, dtype=torch.long), float("inf")
    for _ in range(max(1, inits)):
        centers = [x[lab][ylab == c].mean(0) for c in known]
        while len(centers) < min(k, n):
            if centers:
                d = torch.cdist(pool, torch.stack(centers)).min(1).values ** 2
                probs = d / d.sum() if d.sum() > 0 else torch.full_like(d, 1.0 / len(d))
            else:
                probs = torch.full((len(pool),), 1.0 / len(pool))
            centers.append(pool[torch.multinomial(probs, 1, generator=gen)[0]])
        c = torch.stack(centers)
        for _ in range(iters):
            assign = torch.cdist(x, c).argmin(1)
            if lab.any():
                assign[lab] = fixed_assign
            inertia = float(((x - c[assign]) ** 2).sum())
            if inertia < best_inertia:
                best, best_inertia = assign, inertia
            new = torch.stack([x[assign == i].mean(0) if bool((assign == i).any()) else c[i] for i in range(len(c))])
            if torch.allclose(new, c):
                break
            c = new
    return (ids[best], best_inertia) if return_inertia else ids[best]


def knn_graph(feats: torch.Tensor, k: int, threshold: float, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed kNN graph on cosine similarity (``fedlpa-knn`` = k, ``fedlpa-sim-threshold``; both guesses,
    the face-clustering recipe uses k = 50–80 and 0.58 on face embeddings; our features' similarities
    are high, and k = 80 over-segments least, so the threshold defaults to 0, off): for each
    node its k most similar other nodes, keeping edges with similarity ≥ threshold (and > 0, InfoMap's
    weights are flows). Returns (source, target, weight) arrays."""
    x = F.normalize(feats.float(), dim=1).cpu()
    n = len(x)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    src, dst, w = [], [], []
    for start in range(0, n, chunk):
        sims = x[start:start + chunk] @ x.T
        rows = torch.arange(start, min(start + chunk, n))
        sims[torch.arange(len(rows)), rows] = -float("inf")
        top, idx = sims.topk(k, dim=1)
        keep = (top >= threshold) & (top > 0)
        src.append(rows[:, None].expand_as(idx)[keep])
        dst.append(idx[keep])
        w.append(top[keep])
    return torch.cat(src).numpy(), torch.cat(dst).numpy(), torch.cat(w).numpy().astype(np.float32)


def confident_labels(probs: torch.Tensor, labels: torch.Tensor, labelled: torch.Tensor, percentile: float) -> np.ndarray:
    """CLSD's reliable signals: a labelled sample's class, an unlabelled sample's predicted class when
    its confidence (max softmax) is at or above the ``percentile`` quantile of the unlabelled
    confidences (``fedlpa-confidence-percentile``; the digest's P = 0.5), else −1 (no signal)."""
    conf, pred = probs.max(1)
    out = torch.full((len(probs),), -1, dtype=torch.long)
    unl = ~labelled.cpu().bool()
    if unl.any():
        cut = torch.quantile(conf[unl].float(), percentile)
        sure = unl & (conf >= cut)
        out[sure] = pred[sure]
    out[~unl] = labels.cpu()[~unl]
    return out.numpy()


def refine_edges(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, anchor: np.ndarray, pred: np.ndarray,
                 rule: str = "veto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The confidence-guided edge rule (``fedlpa-edge-rule``; a guess: the paper says the graph is
    "refined with reliable seen-class signals"). It only ever *removes* edges:
    ``veto``: drop (i, j) when both ends carry a reliable label and the labels differ;
    ``confirm``: also drop it when one end is reliable and the other's prediction differs from it;
    ``none``: keep the kNN graph as it is (the ablation without CLSD)."""
    if rule == "none" or len(src) == 0:
        return src, dst, weight
    a_s, a_d = anchor[src], anchor[dst]
    both = (a_s >= 0) & (a_d >= 0)
    drop = both & (a_s != a_d)
    if rule == "confirm":
        lab_s = np.where(a_s >= 0, a_s, pred[src])
        lab_d = np.where(a_d >= 0, a_d, pred[dst])
        drop |= ((a_s >= 0) | (a_d >= 0)) & (lab_s != lab_d)
    elif rule != "veto":
        raise ValueError(f"fedlpa-edge-rule={rule!r}: choose veto, confirm or none")
    keep = ~drop
    return src[keep], dst[keep], weight[keep]


def infomap_modules(n: int, src: np.ndarray, dst: np.ndarray, weight: np.ndarray, seed: int = 1,
                    trials: int = 3) -> np.ndarray:
    """InfoMap (two-level, directed, as the face-clustering recipe) on the weighted graph; every node
    is added, so an isolated one is its own module. Returns a module id (0..) per node."""
    from infomap import Infomap  # noqa: PLC0415

    im = Infomap(two_level=True, directed=True, silent=True, num_trials=trials, seed=seed)
    for i in range(n):
        im.add_node(int(i))
    for s, d, w in zip(src.tolist(), dst.tolist(), weight.tolist(), strict=True):
        im.add_link(int(s), int(d), float(w))
    modules = im.run().modules()
    raw = np.array([modules.get(i, -1 - i) for i in range(n)])
    _, dense = np.unique(raw, return_inverse=True)
    return dense.astype(np.int64)


def concept_prior(modules: np.ndarray, pred: np.ndarray, anchor: np.ndarray, num_outputs: int, min_size: int,
                  mapping: str = "hungarian") -> tuple[np.ndarray, int]:
    """(π over the classifier's outputs, estimated number of local categories). Concepts (modules)
    smaller than ``min_size`` (``fedlpa-min-concept`` × local samples) are outliers: not counted, not in π. How a concept
    maps to an output is a guess (``fedlpa-concept-map``): ``hungarian`` (default) = a one-to-one
    assignment of concepts to outputs maximising the members agreeing (extra concepts fall back to
    ``majority``), so two concepts the model still merges pull toward two outputs; ``majority`` = the most
    frequent label among its members (a reliable label where there is one, else the prediction), which
    feeds the current merges back as the prior. π is mixed with ``PRIOR_FLOOR`` of uniform."""
    label = np.where(anchor >= 0, anchor, pred)
    ids, sizes = np.unique(modules, return_counts=True)
    big = ids[sizes >= min_size]
    counts = np.zeros((len(big), num_outputs))
    for r, m in enumerate(big):
        counts[r] = np.bincount(label[modules == m], minlength=num_outputs)[:num_outputs]
    target = counts.argmax(1) if len(big) else np.zeros(0, np.int64)
    if mapping == "hungarian" and len(big):
        from scipy.optimize import linear_sum_assignment  # noqa: PLC0415

        rows, cols = linear_sum_assignment(-counts)
        target[rows] = cols
    elif mapping != "majority":
        raise ValueError(f"fedlpa-concept-map={mapping!r}: choose majority or hungarian")
    prior = np.zeros(num_outputs)
    for r in range(len(big)):
        prior[target[r]] += counts[r].sum()
    prior = prior / prior.sum() if prior.sum() > 0 else np.full(num_outputs, 1.0 / num_outputs)
    prior = (1 - PRIOR_FLOOR) * prior + PRIOR_FLOOR / num_outputs
    return prior, int(len(big))


# --- data: the GCD split of one client --------------------------------------------------------------

def labelled_mask(y: np.ndarray, known: int, fraction: float, seed: int) -> np.ndarray:
    """A seeded ``fraction`` of the known-class samples (label < ``known``) carry their label."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    idx = np.flatnonzero(y < known)
    mask[rng.permutation(idx)[: int(round(fraction * len(idx)))]] = True
    return mask


def gcd_split(call: ClientCall) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, labelled) of this client's training split; y of unlabelled samples is only for scoring."""
    data = call.data
    mask = labelled_mask(data.y_train, call.run.gcd_known_classes, call.run.gcd_labelled_fraction,
                         derive_seed(call.run.seed, "gcd-labelled", call.cid))
    return data.x_train, data.y_train, mask


@torch.no_grad()
def embed(model: GCDNet, x: np.ndarray, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(backbone features, projections, softmax predictions) of every sample, on the CPU."""
    model.eval()
    feats, projs, probs = [], [], []
    xt = torch.from_numpy(x)
    for i in range(0, len(xt), batch):
        f = model.features(to_device(xt[i:i + batch]))
        feats.append(f.cpu())
        projs.append(model.project(f).cpu())
        probs.append(F.softmax(model.classify(f) / STUDENT_TEMP, dim=1).cpu())
    return torch.cat(feats), torch.cat(projs), torch.cat(probs)


def hungarian_scores(model_name: str, data: str, y: np.ndarray, pred: np.ndarray, known: int) -> dict[str, float]:
    """All / Old / New (one Hungarian assignment over all classes) with their sample counts."""
    acc = M.cluster_accuracy(y, pred, known)
    out: dict[str, float] = {}
    for part, value in zip(("", "_old", "_new"), acc, strict=True):
        setting = data + part
        n = int(len(y) if not part else ((y < known).sum() if part == "_old" else (y >= known).sum()))
        if n:
            out[M.stat(M.HUNGARIAN, M.name(model_name, setting))] = float(value)
            out[M.count_key(setting)] = n
    return out


# --- the client side ----------------------------------------------------------------------------

class SimGCDClient:
    """FedAvg + SimGCD; subclasses change the regulariser (FedLPA), the loss and predictor (GCD) or
    where the model lives (local-only). Round r ≤ ``gcd-ssl-rounds``: SimCLR only, the shared warm-up."""

    model_name = "global_model"

    def start_model(self, call: ClientCall) -> GCDNet:
        return arrays_to_model(new_model(call), call.arrays)

    def warming_up(self, call: ClientCall) -> bool:
        return call.server_round <= call.run.gcd_ssl_rounds

    def prior(self, call: ClientCall, model: GCDNet, state: dict, metrics: dict) -> torch.Tensor | None:
        """The target of the batch-mean prediction; None = SimGCD's uniform (mean-entropy term)."""
        return None

    def batch_loss(self, call: ClientCall, model: GCDNet, views: list[torch.Tensor], y: torch.Tensor,
                   labelled: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        feats = [model.features(v) for v in views]
        proj = [model.project(f) for f in feats]
        if self.warming_up(call):
            return info_nce(proj[0], proj[1], call.run.gcd_ssl_temperature)
        logits = [model.classify(f) for f in feats]
        epoch = (call.server_round - call.run.gcd_ssl_rounds - 1) * call.run.local_epochs
        weight = call.run.gcd_memax_weight if prior is None else call.run.fedlpa_weight
        return simgcd_loss(logits, proj, y, labelled, teacher_temperature(max(epoch, 0)), call.run.gcd_sup_weight,
                           weight, prior, call.run.fedlpa_kl)

    def fit(self, call: ClientCall, model: GCDNet, prior: torch.Tensor | None) -> float:
        x, y, lab = gcd_split(call)
        seed = derive_seed(call.run.seed, call.server_round, call.cid)
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.SGD(model.parameters(), lr=call.learning_rate, momentum=0.9, weight_decay=call.run.weight_decay)
        model.train()
        xt, yt, lt = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(lab)
        losses = []
        for _ in range(call.run.local_epochs):
            order = torch.randperm(len(xt), generator=gen)
            for batch in order.split(call.run.batch_size):
                if len(batch) < 2:
                    continue
                views = [augment(xt[batch], gen), augment(xt[batch], gen)]
                loss = self.batch_loss(call, model, views, to_device(yt[batch]), to_device(lt[batch]), prior)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
        return float(np.mean(losses)) if losses else float("nan")

    def train(self, call: ClientCall) -> ClientReply:
        model = self.start_model(call)
        state, metrics = dict(call.state), {}
        prior = None if self.warming_up(call) else self.prior(call, model, state, metrics)
        loss = self.fit(call, model, prior)
        metrics.update({M.NUM_EXAMPLES: len(call.data.y_train), M.TRAIN_LOSS: loss})
        return ClientReply(model_to_arrays(model), metrics, state)

    def predict(self, call: ClientCall, model: GCDNet, x: np.ndarray, y: np.ndarray, lab: np.ndarray) -> np.ndarray:
        """Cluster ids of the samples (SimGCD: the classifier's argmax)."""
        return embed(model, x)[2].argmax(1).numpy()

    def evaluate(self, call: ClientCall) -> ClientReply:
        """The model on this client's unlabelled training samples (transductive, as SimGCD/GCD):
        All/Old/New accuracy under one Hungarian matching."""
        model = self.start_model(call)
        x, y, lab = gcd_split(call)
        pred = self.predict(call, model, x, y, lab)
        unl = ~lab
        scores = hungarian_scores(self.model_name, M.UNLABELLED, y[unl], pred[unl], call.run.gcd_known_classes)
        return ClientReply({}, {M.NUM_EXAMPLES: len(y), **scores}, call.state)


class FedLPAClient(SimGCDClient):
    """SimGCD with Local Prior Alignment after ``fedlpa-warmup-rounds`` (counted after the SSL warm-up)."""

    def discovery_due(self, call: ClientCall, state: dict) -> bool:
        """Discovery rounds are ssl + warm-up + 1, then every ``fedlpa-every``; a client that was not
        sampled in the last one runs it at its next participation."""
        first = call.run.gcd_ssl_rounds + call.run.fedlpa_warmup_rounds + 1
        if call.server_round < first:
            return False
        last_due = first + (call.server_round - first) // call.run.fedlpa_every * call.run.fedlpa_every
        done = int(state[STATE_ROUND][0]) if STATE_ROUND in state else 0
        return done < last_due

    def prior(self, call: ClientCall, model: GCDNet, state: dict, metrics: dict) -> torch.Tensor | None:
        if self.discovery_due(call, state):
            pi, k_est, k_true = discover(call, model)
            state[STATE_PRIOR], state[STATE_ROUND], state[STATE_K] = (
                pi.astype(np.float64), np.array([call.server_round]), np.array([k_est]))
            metrics[M.ESTIMATED_K], metrics[M.TRUE_K] = float(k_est), float(k_true)
        if STATE_PRIOR not in state:
            return None  # before the first discovery: SimGCD's uniform target
        return to_device(torch.from_numpy(np.asarray(state[STATE_PRIOR], dtype=np.float32)))


def discover(call: ClientCall, model: GCDNet) -> tuple[np.ndarray, int, int]:
    """CLSD → InfoMap → prior on this client's training data with the received model:
    (π, estimated number of local categories, true number of classes here with at least the
    ``fedlpa-min-concept`` share of the samples, the size below which a concept is an outlier)."""
    run = call.run
    x, y, lab = gcd_split(call)
    feats, projs, probs = embed(model, x)
    graph_feats = feats if run.fedlpa_graph_feature == "backbone" else projs
    src, dst, w = knn_graph(graph_feats, run.fedlpa_knn, run.fedlpa_sim_threshold)
    pred = probs.argmax(1).numpy()
    anchor = confident_labels(probs, torch.from_numpy(y), torch.from_numpy(lab), run.fedlpa_confidence_percentile)
    src, dst, w = refine_edges(src, dst, w, anchor, pred, run.fedlpa_edge_rule)
    modules = infomap_modules(len(x), src, dst, w, seed=derive_seed(run.seed, "infomap", call.cid) % (2**31 - 1) + 1)
    min_size = max(1, math.ceil(run.fedlpa_min_concept * len(x)))
    pi, k_est = concept_prior(modules, pred, anchor, probs.shape[1], min_size, run.fedlpa_concept_map)
    k_true = int((np.bincount(y) >= min_size).sum())
    return pi, k_est, k_true


class GCDClient(SimGCDClient):
    """FedAvg + GCD: SupCon + SimCLR features; predictions by semi-supervised k-means with the head
    size as K (labelled samples anchor the known classes)."""

    def batch_loss(self, call, model, views, y, labelled, prior):
        feats = [model.features(v) for v in views]
        proj = [model.project(f) for f in feats]
        if self.warming_up(call):
            return info_nce(proj[0], proj[1], call.run.gcd_ssl_temperature)
        return gcd_loss(proj, y, labelled, call.run.gcd_sup_weight)

    def predict(self, call, model, x, y, lab):
        feats = embed(model, x)[0]
        k = head_size(call.run, call.data.num_classes)
        return ss_kmeans(feats, k, torch.from_numpy(y), torch.from_numpy(lab),
                         seed=derive_seed(call.run.seed, "ss-kmeans", call.cid)).numpy()


class LocalSimGCDClient(SimGCDClient):
    """SimGCD on each client alone after the shared federated SSL warm-up: the model lives in the
    client's state and is scored there (``local_model@…``), also on the global test set in the last
    round. The server keeps the warm-up model unchanged (``strategies.fedlpa.LocalSimGCDStrategy``)."""

    model_name = "local_model"

    def start_model(self, call: ClientCall) -> GCDNet:
        own = {k[len(LOCAL_PREFIX):]: v for k, v in call.state.items() if k.startswith(LOCAL_PREFIX)}
        if self.warming_up(call) or not own:
            return arrays_to_model(new_model(call), call.arrays)
        return arrays_to_model(new_model(call), own)

    def train(self, call: ClientCall) -> ClientReply:
        reply = super().train(call)
        if self.warming_up(call):
            return reply
        state = {**reply.state, **{LOCAL_PREFIX + k: v for k, v in reply.arrays.items()}}
        return ClientReply(reply.arrays, reply.metrics, state)

    def evaluate(self, call: ClientCall) -> ClientReply:
        if self.warming_up(call):  # nothing local yet: the shared warm-up model, as every method
            return ClientReply({}, {M.NUM_EXAMPLES: len(call.data.y_train)}, call.state)
        reply = super().evaluate(call)
        metrics = dict(reply.metrics)
        if call.server_round == call.run.num_server_rounds and not call.data_path:
            from bouquet.config import data_spec  # noqa: PLC0415
            from bouquet.datasets import global_test  # noqa: PLC0415

            test = global_test(data_spec(call.run, call.num_partitions))
            if test is not None:
                x, y = test
                pred = embed(self.start_model(call), x)[2].argmax(1).numpy()
                metrics.update(hungarian_scores("local_model", "global_test", y, pred, call.run.gcd_known_classes))
        return ClientReply({}, metrics, call.state)
