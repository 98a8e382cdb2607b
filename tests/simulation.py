"""Run Bouquet's real ServerApp/ClientApp in Flower's Ray simulation from pytest.

``run_simulation`` gives apps an empty ``run_config`` they may not modify, so the apps are
wrapped to see the overrides (Flower 1.41; see shared/reference/flower.md §2.6).
"""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from bouquet import client_app as ca
from bouquet import server_app as sa


def _with_config(context: Context, config: dict, node_extra=None) -> Context:
    node_config = dict(context.node_config)
    if node_extra is not None and "partition-id" in node_config:
        node_config.update(node_extra(int(node_config["partition-id"])))
    return Context(run_id=context.run_id, node_id=context.node_id, node_config=node_config,
                   state=context.state, run_config={**config, **context.run_config})


def simulate(out_dir: Path, num_clients: int, node_config=None, **overrides) -> dict:
    """One simulated run; returns its summary.json (with ``run_dir`` added). ``node_config``:
    partition id -> extra node-config entries (a site's own settings, e.g. ``model-arch``)."""
    config = {"output-dir": str(out_dir), **overrides}
    server = ServerApp()

    @server.main()
    def _main(grid, context):
        sa.main(grid, _with_config(context, config))

    client = ClientApp()

    @client.query()
    def _query(msg, context):
        return ca.query(msg, _with_config(context, config, node_config))

    @client.train()
    def _train(msg, context):
        return ca.train(msg, _with_config(context, config, node_config))

    @client.evaluate()
    def _evaluate(msg, context):
        return ca.evaluate(msg, _with_config(context, config, node_config))

    before = set(out_dir.glob("*/summary.json")) if out_dir.exists() else set()
    run_simulation(server_app=server, client_app=client, num_supernodes=num_clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    new = set(out_dir.glob("*/summary.json")) - before  # none new: a resumed run rewrote its own
    path = max(new or set(out_dir.glob("*/summary.json")), key=lambda p: p.stat().st_mtime)
    return {**json.loads(path.read_text()), "run_dir": str(path.parent)}


def kill_server_in_round(monkeypatch, server_round: int):
    """Make the ServerApp die (SystemExit) when it scores ``server_round``, as a killed server
    would after that round's training; returns a function that undoes it."""
    real_call = sa.ServerEvaluator.__call__

    def crash(self, rnd, arrays):
        if rnd == server_round:
            raise SystemExit(f"killed during round {server_round}")
        return real_call(self, rnd, arrays)

    monkeypatch.setattr(sa.ServerEvaluator, "__call__", crash)
    return lambda: monkeypatch.setattr(sa.ServerEvaluator, "__call__", real_call)

