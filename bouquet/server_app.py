"""ServerApp: validate the config, find the clients, build the method's strategy, run it,
and write the results."""

from __future__ import annotations

import json
import threading
import time
from logging import ERROR, INFO, WARNING
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.superlink.grid.http_grid import HttpGrid

from bouquet import checkpoint, client_state
from bouquet import metrics as M
from bouquet.clients.base import arrays_to_model
from bouquet.clients.training import predict_arrays
from bouquet.config import ConfigError, RunConfig, data_spec
from bouquet.datasets import (DRAWN, GRAPH_DATASETS, DataFileError, DataSpec, UniformSizes, check_spec,
                              client_data, data_root, global_test,
                              global_test_is_users_data,
                              load_dataset, new_client_graph)
from bouquet.device import to_device, to_numpy
from bouquet.federation import ClientDirectory, PromptGrid, cap_object_pulls, discover_clients
from bouquet.multiplex import LogicalDirectory, MultiplexGrid
from bouquet.models.hetero import HeteroBundle
from bouquet.records import to_record
from bouquet.registry import get_method
from bouquet.strategies import RunFailed, Stop, run_rounds
from bouquet.strategies.compose import build_strategy
from bouquet.strategies.rounds import load_state_arrays, state_arrays
from bouquet.results import RunRecorder, format_table, headline_text, output_root, write_partition
from bouquet.seeding import seed_everything
from bouquet.startup import no_collections

app = ServerApp()
GRAPH_SETTINGS = (("Seen Graph", M.LOCAL_TEST), ("Unseen Node", M.UNSEEN_NODE),
                  ("Missing Class", M.MISSING_CLASS), ("New Client", M.NEW_CLIENT))


def run_name(cfg: RunConfig, num_clients: int, run_id: int) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{cfg.method}_{cfg.dataset}_{cfg.partitioner}_k{num_clients}_s{cfg.seed}_{stamp}_{run_id}"


class ServerEvaluator:
    """Flower's ``evaluate_fn``: scores the global model on server-side data (the official
    test split, the Louvain held-out subgraph) and logs one progress line per round. The model
    and the subgraph are on :func:`bouquet.device.device`, test batches go there one by one."""

    def __init__(self, cfg: RunConfig, spec: DataSpec, recorder: RunRecorder, scores_global: bool,
                 make_model: Callable[[], nn.Module]) -> None:
        self.cfg, self.recorder, self.scores_global, self.make_model = cfg, recorder, scores_global, make_model
        self.test = global_test(spec)
        self.new_client = to_device(new_client_graph(spec))
        self.previous: dict[str, np.ndarray] = {}  # the last global model's correctness per server-side set
        self._test32: torch.Tensor | None = None  # heterogeneous models: the test images at 32×32

    def _score(self, scores: dict[str, float], key: str, correct: np.ndarray, server_round: int = -1) -> None:
        """Accuracy, and global forgetting: flips against the previous round's global model
        (``forgetting-first-visit='zero'``: round 1 against an all-wrong model, as FedKPer's code)."""
        scores[key] = float(correct.mean())
        before = self.previous.get(key)
        if server_round == 1 and self.cfg.forgetting_first_visit == "zero":
            before = np.zeros_like(correct)
        if before is not None:
            scores[M.stat(M.NFR, key)], scores[M.stat(M.PFR, key)] = M.flip_rates(before, correct)
        self.previous[key] = correct

    def _score_bundle(self, scores: dict[str, float], bundle: HeteroBundle, server_round: int) -> None:
        """Heterogeneous models: each architecture on the global test set, their mean (the
        last-round number, which selects nothing on the test set), and the paper's number:
        the mean over architectures of each one's best accuracy at the authors' checkpoint
        rounds (``bouquet.strategies.gefl.checkpoint_round``), an optimistic max kept as such."""
        from bouquet.models.hetero import to_side  # noqa: PLC0415
        from bouquet.strategies.gefl import checkpoint_round  # noqa: PLC0415

        if server_round > 0 and not checkpoint_round(self.cfg, server_round):
            return  # the authors' evaluation rounds only: 10 nets on the full test set cost seconds
        x, y = self.test
        if self._test32 is None:
            self._test32 = to_side(torch.from_numpy(x))  # resized once, not once per architecture
        accs = np.zeros(bundle.num_archs)
        for m in range(bundle.num_archs):
            net = bundle.arch(m).eval()
            with torch.no_grad():
                pred = torch.cat([net(to_device(self._test32[i:i + 2048])).argmax(1) for i in range(0, len(y), 2048)])
            accs[m] = float((to_numpy(pred) == y).mean())
            scores[M.name(f"arch{m}", "global_test")] = float(accs[m])
        scores[M.GLOBAL_GLOBAL] = float(accs.mean())
        if getattr(bundle, "gen", None) is not None and server_round > 0:
            scores[M.GENERATED] = generated_accuracy(bundle, self.cfg)
        if server_round > 0:
            best = np.maximum(self.previous.get(M.BEST_CHECKPOINT, accs), accs)
            self.previous[M.BEST_CHECKPOINT] = best
        if M.BEST_CHECKPOINT in self.previous:
            scores[M.BEST_CHECKPOINT] = float(self.previous[M.BEST_CHECKPOINT].mean())

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        seconds = self.recorder.round_elapsed(server_round) if server_round > 0 else 0.0  # training so far
        scores: dict[str, float] = {}
        if self.scores_global:
            model = arrays_to_model(self.make_model(), {k: v.numpy() for k, v in arrays.items()})
            if self.test is not None and isinstance(model, HeteroBundle):
                self._score_bundle(scores, model, server_round)
            elif self.test is not None:
                x, y = self.test
                with torch.no_grad():
                    logits = predict_arrays(model, x)
                self._score(scores, M.GLOBAL_GLOBAL, logits.argmax(1).numpy() == y, server_round)
                if self.cfg.dataset == "tinyshakespeare":  # a language model is judged by its loss
                    loss = float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)))
                    scores[M.GLOBAL_LOSS], scores[M.GLOBAL_PERPLEXITY] = loss, float(np.exp(loss))
            if self.new_client is not None:
                graph = self.new_client
                model.eval()
                with torch.no_grad():
                    pred = model(graph.x, graph.edge_index).argmax(1)
                self._score(scores, M.GLOBAL_NEW_CLIENT, to_numpy(pred == graph.y))
        if scores:
            self.recorder.server_metrics(server_round, scores)
        # the method's headline metrics only (bouquet.results.headline_metrics); all go to metrics.csv
        text = headline_text(self.recorder.server.get(server_round, {}), self.cfg.method, self.cfg.dataset)
        log(INFO, "[bouquet] round %d/%d  %s  (%.1fs)", server_round, self.cfg.num_server_rounds,
            text or "no headline metric yet", seconds)
        return MetricRecord(scores) if scores else None


def generated_accuracy(bundle: HeteroBundle, cfg: RunConfig, per_class: int = 100) -> float:
    """GeFL diagnostic: the nets' mean accuracy on the generator's samples of each requested
    label (do the samples carry their labels, as the nets see them?). Its own RNG stream
    (the device's: on a GPU the samples differ from the CPU's)."""
    from bouquet.clients.gefl import synthetic_logits  # noqa: PLC0415

    gen = bundle.gen.eval()
    labels = to_device(torch.arange(gen.num_classes).repeat(per_class))
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        with torch.no_grad():
            sample = gen.sample(labels)
            accs = [float((synthetic_logits(bundle.arch(m).eval(), gen, sample, cfg).argmax(1) == labels).float().mean())
                    for m in range(bundle.num_archs)]
    return float(np.mean(accs))


def _checkpoint_to_resume(cfg: RunConfig) -> checkpoint.Checkpoint | None:
    """The checkpoint named by ``resume-from``, checked against this run's config."""
    if not cfg.resume_from:
        return None
    try:
        ckpt = checkpoint.load(Path(cfg.resume_from))
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    differing = checkpoint.config_differences(ckpt.run_config, cfg.to_run_config())
    if differing:
        raise ConfigError(f"resume-from={cfg.resume_from!r}: the run config differs from the checkpointed run in {differing}")
    if cfg.num_server_rounds <= ckpt.round:
        raise ConfigError(f"resume-from={cfg.resume_from!r} is after round {ckpt.round}: num-server-rounds="
                          f"{cfg.num_server_rounds} leaves nothing to run")
    return ckpt


def _check_resumed(cfg: RunConfig, ckpt: checkpoint.Checkpoint, num_partitions: int, model) -> None:
    """What the run config cannot say: the checkpointed run's federation size and model."""
    saved = json.loads((Path(cfg.resume_from) / "config.json").read_text()).get("clients")
    if saved is not None and int(saved) != num_partitions:
        raise ConfigError(f"resume-from={cfg.resume_from!r} ran with {saved} clients, this federation has "
                          f"{num_partitions}: the partitions would differ")
    want = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    got = {k: (tuple(v.shape), str(v.dtype)) for k, v in ckpt.arrays.items()}
    if want != got:
        bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))[:5]
        raise ConfigError(f"resume-from={cfg.resume_from!r}: the checkpointed arrays do not fit this model ({bad})")


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        cfg = RunConfig.from_run_config(context.run_config)  # fails before anything starts
        if isinstance(grid, HttpGrid):  # deployment: a reply's objects come after the reply; in
            cap_object_pulls(0.1)       # simulation there are no pulls, and the cap is process-wide
        run(PromptGrid(grid), cfg, context.run_id)  # replies noticed within 0.1 s (bouquet.federation)
    except (ConfigError, DataFileError, ValueError, RunFailed) as exc:
        # One line naming the key or file (what `bouquet run` prints last); the run still fails.
        log(ERROR, "[bouquet] error: %s", exc)
        raise


def prefetch(cfg: RunConfig) -> threading.Thread:
    """While the SuperNodes (in simulation: Ray and its actors) start, decode the dataset, import
    the plotting library and, with logical clients (their number is known now), compute the
    partition; all cached, so the run then finds them ready. A failure here is silent: the
    run's own call reports it."""
    def work() -> None:
        try:
            with no_collections():  # long-lived objects: no collection walks them (bouquet.startup)
                from bouquet.datasets.client_data import partition_indices  # noqa: PLC0415
                from bouquet.results import _pyplot  # noqa: PLC0415

                load_dataset(cfg.dataset, data_root(cfg.data_dir))
                _pyplot()
                if cfg.num_clients and cfg.partitioner != DRAWN:
                    partition_indices(data_spec(cfg, cfg.num_clients))
        except Exception:  # noqa: BLE001, S110
            pass

    worker = threading.Thread(target=work, name="bouquet-prefetch", daemon=True)
    worker.start()
    return worker


def run(grid: Grid, cfg: RunConfig, run_id: int) -> dict:
    timeline = {"serverapp_started": time.time()}  # wall clock: the bench splits a run's fixed costs with it
    seed_everything(cfg.seed)
    log(INFO, "[bouquet] config valid (%s on %s); asking every SuperNode for its partition id", cfg.method, cfg.dataset)
    ready = prefetch(cfg)
    clients: ClientDirectory | LogicalDirectory = discover_clients(grid, expected=cfg.federation_size)
    ready.join()
    if cfg.num_clients:  # logical clients served by the SuperNodes in batches (bouquet.multiplex)
        clients = LogicalDirectory(cfg.num_clients, clients)
        grid = MultiplexGrid(grid, clients)
        log(INFO, "[bouquet] %d logical clients on %d SuperNodes; loading %s", cfg.num_clients,
            len(clients.workers.partition_of), cfg.dataset)
    else:
        log(INFO, "[bouquet] %d clients answered; loading %s", clients.num_partitions, cfg.dataset)
    timeline["clients_found"] = time.time()
    spec = data_spec(cfg, clients.num_partitions)
    check_spec(spec)  # dataset/partitioner/federation-size combinations, before round 1
    cfg.check_federation(clients.num_partitions)
    method = get_method(cfg.method)
    dataset = load_dataset(spec.dataset, data_root(spec.data_dir))
    torch.manual_seed(cfg.seed)
    model = method.model(cfg, dataset)
    meta = {
        "method": cfg.method, "dataset": cfg.dataset, "partitioner": cfg.partitioner,
        "seed": cfg.seed, "clients": clients.num_partitions, "rounds": cfg.num_server_rounds,
        "run_id": run_id, "run_config": cfg.to_run_config(),
    }
    ckpt = _checkpoint_to_resume(cfg)
    if ckpt is None:
        recorder = RunRecorder(output_root(cfg) / run_name(cfg, clients.num_partitions, run_id), meta)
        initial = ArrayRecord(model.state_dict())
    else:
        _check_resumed(cfg, ckpt, clients.num_partitions, model)
        recorder = RunRecorder(Path(cfg.resume_from), meta, resume_after=ckpt.round)
        recorder.rejections = list(ckpt.rejections)
        initial = to_record(ckpt.arrays)
        log(INFO, "[bouquet] resuming %s after round %d", recorder.run_dir, ckpt.round)
    log(INFO, "[bouquet] %s; results in %s", method.summary, recorder.run_dir)
    try:  # the clients' own seeded split, from labels the server already loaded (cached)
        if spec.partitioner == DRAWN:  # a population never materialised: every client draws the same number
            counts, total = UniformSizes(spec.num_partitions, spec.examples_per_client), float("inf")
        else:
            counts = {int(name): float(row.sum()) for name, row in write_partition(spec, recorder.run_dir)
                      if name.isdigit()}
            total = float(sum(counts.values()))
    except Exception as exc:  # noqa: BLE001 (a figure never stops a run)
        if cfg.dp_mode != "none":
            raise ConfigError(f"dp={cfg.dp_mode!r} needs every partition's size on the server, which failed: {exc}") from exc
        log(WARNING, "[bouquet] the server cannot materialise the partitions (%s): no partition.png, and "
            "num-examples is bounded only by being positive", exc)
        counts, total = {}, float("inf")
    user_sizes = None
    if cfg.dp_mode != "none" and cfg.dataset not in GRAPH_DATASETS:
        # k and the expected batch from what each user trains on (its partition minus its local test split)
        user_sizes = {pid: len(client_data(spec, pid).y_train) for pid in range(clients.num_partitions)}
    strategy, hooks, privacy = build_strategy(method, cfg, clients, recorder, counts, total, user_sizes)
    if privacy is not None:
        privacy.evaluated_on_users = hooks.server_evaluates and global_test_is_users_data(spec)
    evaluator = ServerEvaluator(cfg, spec, recorder, hooks.server_evaluates, lambda: method.model(cfg, dataset))
    if ckpt is not None:
        load_state_arrays(strategy, ckpt.strategy)
        evaluator.previous = dict(ckpt.evaluator)

    def save_checkpoint(server_round: int, arrays: ArrayRecord) -> None:
        checkpoint.save(recorder.run_dir, checkpoint.Checkpoint(
            server_round, {k: v.numpy() for k, v in arrays.items()}, state_arrays(strategy),
            dict(evaluator.previous), list(recorder.rejections), cfg.to_run_config()))

    # names the experiment for the clients' state snapshots (bouquet.client_state)
    session = {client_state.STATE_KEY: recorder.run_dir.name, client_state.RESUMED_AFTER: 0 if ckpt is None else ckpt.round,
               client_state.SESSION: int(run_id)}
    stopped = None
    timeline["rounds_started"] = time.time()
    recorder.meta["timeline"] = timeline
    try:
        run_rounds(strategy, grid, initial, cfg.num_server_rounds, timeout=cfg.round_timeout,
                   train_config=ConfigRecord(session), evaluate_config=ConfigRecord(session), evaluate_fn=evaluator,
                   first_round=1 if ckpt is None else ckpt.round + 1, on_round_end=save_checkpoint)
    except Stop as exc:  # e.g. the privacy budget: what was written so far stays
        log(ERROR, "[bouquet] %s", exc)
        stopped = str(exc)
    if privacy is not None:
        recorder.meta["privacy"] = privacy.summary()
    failure = stopped or hooks.gate.run_problem()
    summary = recorder.finish(failure)
    log(INFO, "[bouquet] final metrics (%s):\n%s", recorder.run_dir, format_table(summary["final"]))
    if failure is not None:
        raise RunFailed(failure)  # the run ends finished:failed, with the reason as its last line
    settings = [(title, summary["final"].get(M.name("local_model", data))) for title, data in GRAPH_SETTINGS]
    if cfg.dataset in GRAPH_DATASETS:
        log(INFO, "[bouquet] each client's model after local training: %s",
            "  ".join(f"{t}={v:.3f}" for t, v in settings if v is not None))
    return summary
