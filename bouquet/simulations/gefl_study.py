"""Why GeFL's margin over per-architecture FedAvg is small here: an upper bound by an oracle.

With 10 clients and 10 architectures nothing is averaged, so per-architecture FedAvg is each
client training alone and GeFL is the same plus, every round, one epoch on generated samples.
That makes the comparison a plain loop (no Flower): for each client k (architecture k), from the
same seeded initial net, every round ``--real-epochs`` epochs on its own images, preceded by one
epoch of ⌊n/B⌋ batches of

- ``none``: nothing (= hetero-fedavg / hetero-local at N = M = 10),
- ``generator``: fresh samples of uniform labels from a trained GeFL generator (a run's checkpoint),
  as GeFL's client does,
- ``oracle``: fresh *real* images of uniform labels drawn from the other clients' training data —
  what a perfect generator of the federation's distribution would give.

The oracle bounds what any generator can add; the distance between ``generator`` and ``oracle``
is what the generator's quality costs. Writes ``gefl-oracle.csv`` / ``.json`` and prints a table.
``--spread N`` instead measures the generator's diversity: the mean over classes of the
per-pixel standard deviation of N samples of a class, beside the same for N real training images
of each class (a collapsed generator: near 0).

    python -m bouquet.simulations.gefl_study --run docs/results/reproduce-gefl/runs/gefl-cvae_fmnist-10_k10_s0/<run> \
        --out docs/results/gefl-oracle --rounds 15 --archs 0,2,4,7,9
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bouquet import checkpoint
from bouquet.clients.base import arrays_to_model
from bouquet.config import RunConfig, data_spec
from bouquet.datasets import data_root, load_dataset
from bouquet.device import to_device
from bouquet.models.generators import to_unit
from bouquet.models.hetero import to_side
from bouquet.registry import get_method
from bouquet.seeding import derive_seed


def _client_train(cfg: RunConfig, spec, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Client k's training images exactly as a run gives them (partition, local split, data-fraction),
    on the device."""
    from bouquet.clients.base import ClientCall  # noqa: PLC0415

    data = ClientCall(cid=k, num_partitions=spec.num_partitions, server_round=1, run=cfg, arrays={}).data
    return to_device(to_side(torch.from_numpy(data.x_train))), to_device(torch.from_numpy(data.y_train).long())


def _generator(run_dir: Path):
    """A finished run's config, dataset and trained generator (from its checkpoint), in eval mode."""
    ckpt = checkpoint.load(run_dir)
    cfg = RunConfig.from_run_config(ckpt.run_config)
    dataset = load_dataset(cfg.dataset, data_root(cfg.data_dir))
    return cfg, dataset, arrays_to_model(get_method(cfg.method).model(cfg, dataset), ckpt.arrays).gen.eval()


def run(run_dir: Path, out: Path, rounds: int, archs: list[int], real_epochs: int, seed: int) -> list[dict]:
    cfg, dataset, gen = _generator(run_dir)
    spec = data_spec(cfg, 10)
    clients = {k: _client_train(cfg, spec, k) for k in range(10)}
    x_test = to_device(to_side(torch.from_numpy(dataset.x_test)))
    y_test = to_device(torch.from_numpy(dataset.y_test).long())
    rows = []
    for k in archs:
        others_x = torch.cat([clients[j][0] for j in clients if j != k])
        others_y = torch.cat([clients[j][1] for j in clients if j != k])
        by_label = [torch.nonzero(others_y == c).flatten() for c in range(10)]
        x, y = clients[k]
        for variant in ("none", "generator", "oracle"):
            torch.manual_seed(derive_seed(seed, "gefl-study", k))  # the same initial net for every variant
            net = to_device(get_method("hetero-fedavg").model(cfg, dataset).arch(k))
            rng = torch.Generator().manual_seed(derive_seed(seed, "gefl-study-data", k, variant))
            start = time.perf_counter()
            for _ in range(rounds):
                net.train()
                if variant != "none":
                    opt = torch.optim.SGD(net.parameters(), lr=cfg.learning_rate)
                    for _ in range(max(len(y) // cfg.batch_size, 1)):
                        labels = to_device(torch.randint(0, 10, (cfg.batch_size,), generator=rng))
                        if variant == "generator":
                            with torch.no_grad():
                                batch = to_unit(gen.sample(labels), gen.data_range)
                        else:
                            pick = [by_label[c][torch.randint(len(by_label[c]), (1,), generator=rng)].item()
                                    for c in labels.tolist()]
                            batch = others_x[pick]
                        loss = F.cross_entropy(net(batch), labels)
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                opt = torch.optim.SGD(net.parameters(), lr=cfg.learning_rate)
                for _ in range(real_epochs):
                    order = torch.randperm(len(y), generator=rng)
                    for i in range(0, len(y), cfg.batch_size):
                        idx = order[i:i + cfg.batch_size]
                        loss = F.cross_entropy(net(x[idx]), y[idx])
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
            net.eval()
            with torch.no_grad():
                pred = torch.cat([net(x_test[i:i + 2048]).argmax(1) for i in range(0, len(y_test), 2048)])
            acc = float((pred == y_test).float().mean())
            rows.append({"arch": k, "variant": variant, "accuracy": acc, "rounds": rounds,
                         "seconds": round(time.perf_counter() - start, 1)})
            print(f"[gefl-study] arch {k} {variant:9s} accuracy {acc:.4f}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "gefl-oracle.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    means = {v: float(np.mean([r["accuracy"] for r in rows if r["variant"] == v])) for v in ("none", "generator", "oracle")}
    (out / "gefl-oracle.json").write_text(json.dumps({"run": str(run_dir), "rounds": rounds, "archs": archs,
                                                      "real_epochs": real_epochs, "mean_accuracy": means}, indent=2))
    print("| variant | mean accuracy over the archs | vs none |\n|---|---|---|")
    for v, m in means.items():
        print(f"| {v} | {100 * m:.2f} | {100 * (m - means['none']):+.2f} |")
    return rows


def within_class_spread(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over the classes present of the mean per-pixel standard deviation within the class."""
    flat = x.reshape(len(x), -1).float()
    return float(np.mean([flat[y == c].std(0).mean().item() for c in torch.unique(y).tolist()]))


def spread(run_dir: Path, per_class: int, seed: int) -> dict:
    """The run's generator's within-class spread against the real training images' (both in [0, 1])."""
    cfg, dataset, gen = _generator(run_dir)
    if cfg.method != "gefl":
        raise SystemExit(f"--spread measures an image generator: {run_dir} is a {cfg.method!r} run, not 'gefl'")
    y_real = torch.from_numpy(np.asarray(dataset.y_train)).long()
    pick = torch.cat([torch.nonzero(y_real == c).flatten()[:per_class] for c in range(10)])
    real = within_class_spread(torch.from_numpy(np.array(dataset.x_train[pick.numpy()])), y_real[pick])
    torch.manual_seed(seed)
    labels = to_device(torch.arange(10).repeat_interleave(per_class))
    with torch.no_grad():
        fake = within_class_spread(to_unit(gen.sample(labels), gen.data_range).cpu(), labels.cpu())
    out = {"run": str(run_dir), "per_class": per_class, "generated": fake, "real": real, "ratio": fake / real}
    print(f"[gefl-study] within-class spread: generated {fake:.4f}, real {real:.4f} ({100 * fake / real:.1f} %)")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a finished gefl run folder (its checkpoint's generator)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--archs", default="0,2,4,7,9")
    p.add_argument("--real-epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spread", type=int, default=0, metavar="N",
                   help="measure the generator's within-class spread on N samples a class instead (no training)")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.spread:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "gefl-spread.json").write_text(json.dumps(spread(a.run, a.spread, a.seed), indent=2))
        return
    run(a.run, a.out, a.rounds, [int(s) for s in a.archs.split(",")], a.real_epochs, a.seed)


if __name__ == "__main__":
    main()
