"""ClientApp: a thin adapter from Flower messages and ``Context.state`` to a method's
client logic (``bouquet.clients``), which never sees Flower types."""

from __future__ import annotations

import sys
import threading

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from bouquet import adversary, client_state, multiplex
from bouquet.clients.base import Arrays, ClientCall, ClientReply
from bouquet.config import RunConfig, data_spec
from bouquet.federation import NUM_PARTITIONS
from bouquet.metrics import PARTITION_ID, track_forgetting
from bouquet.records import to_record
from bouquet.registry import get_method
from bouquet.results import output_root
from bouquet.startup import no_collections

app = ClientApp()
_warming: list[threading.Thread] = []  # this process's warm-up (simulation), joined before any work


def _client_process() -> None:
    """One torch thread per client process (two Ray actors on two cores: no oversubscription).
    Set when a client first works, not at import: Flower's simulation also imports this module
    in the process that runs the ServerApp, whose evaluation should use every core."""
    while _warming:
        _warming.pop().join()
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def warm_up(run_config: dict, cid: int, num_partitions: int) -> None:
    """What a simulated client's first message would otherwise pay inside round 1 (its
    dataset decoded, the partition computed, torch's optimizer machinery imported), done while
    the server is still setting up. A failure here is silent: the real call reports it."""
    try:
        with no_collections():  # long-lived objects: no collection walks them (bouquet.startup)
            torch.set_num_threads(1)
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # imports torch._dynamo (~1.4 s)
            from bouquet.datasets import client_data  # noqa: PLC0415

            cfg = RunConfig.from_run_config(run_config)
            if cfg.num_clients:  # logical clients: any id computes the partition they all share
                cid, num_partitions = 0, cfg.num_clients
            client_data(data_spec(cfg, num_partitions), cid)
    except Exception:  # noqa: BLE001, S110
        pass


def state_key(cid: int, part: str = "client") -> str:
    """Client state is keyed by logical client id, so one node may serve several clients;
    the method's own state and the shared forgetting memory are separate records."""
    return f"bouquet/{part}-{cid}"


def _to_numpy(record: ArrayRecord | None) -> Arrays:
    return {} if record is None else {k: v.numpy() for k, v in record.items()}


def _identity(context: Context) -> tuple[int, int]:
    """Node-config ``partition-id`` and ``num-partitions``, integers as given: ``0.5`` or
    ``true`` is a typo to report, not a partition to round to (it would take another's)."""
    out = []
    for key in ("partition-id", "num-partitions"):
        value = context.node_config[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"node-config {key}={value!r} must be an integer")
        out.append(value)
    return out[0], out[1]


def _node_arch(context: Context) -> int:
    """Node-config ``model-arch``: the architecture id this site trains (heterogeneous models)."""
    value = context.node_config.get("model-arch", -1)
    arch = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        arch = int(value)
    if arch is None or (arch != -1 and not 0 <= arch <= 9):
        raise ValueError(f"node-config model-arch={value!r} must be an architecture id 0..9")
    return arch


def _data_path(context: Context) -> str:
    """Node-config ``data-path``: a folder from ``bouquet export-partitions`` (deployment)."""
    return str(context.node_config.get("data-path", ""))


PARTS = ("client", "forgetting")  # the records a client keeps between rounds


def _state_folder(context: Context, cfg: RunConfig, cid: int, config: dict):
    """Where this client's snapshots go (None: the server did not name the experiment)."""
    key = str(config.get(client_state.STATE_KEY, ""))
    if not key:
        return None
    return client_state.folder(str(context.node_config.get("state-dir", "")), output_root(cfg), key, cid)


def _restore(context: Context, cid: int, config: dict, where) -> None:
    """First message of a resumed run: this client's records as of the resumed round."""
    marker = state_key(cid, "restored")
    resumed_after = int(config.get(client_state.RESUMED_AFTER, 0))
    if where is None or resumed_after <= 0 or marker in context.state:
        return
    found = client_state.load(where, resumed_after)
    for part, arrays in (found[1] if found else {}).items():
        context.state[state_key(cid, part)] = to_record(arrays)
    context.state[marker] = ConfigRecord({"round": found[0] if found else 0})


def _handle(msg: Message, context: Context, step: str) -> Message:
    cfg = RunConfig.from_run_config(context.run_config)
    cid, num_partitions = _identity(context)
    config = dict(msg.content["config"]) if "config" in msg.content else {}
    where = _state_folder(context, cfg, cid, config)
    _restore(context, cid, config, where)
    call = ClientCall(
        cid=cid,
        num_partitions=num_partitions,
        server_round=int(config.get("server-round", 0)),
        run=cfg,
        arrays=_to_numpy(msg.content.get("arrays")),
        config=config,
        state=_to_numpy(context.state.get(state_key(cid))),
        extras={k: _to_numpy(v) for k, v in msg.content.array_records.items() if k != "arrays"},
        data_path=_data_path(context),
        node_arch=_node_arch(context),
    )
    logic = get_method(cfg.method).client()
    reply: ClientReply = logic.train(call) if step == "train" else logic.evaluate(call)
    if reply.state:
        context.state[state_key(cid)] = to_record(reply.state)
    memory_key = state_key(cid, "forgetting")
    scores, memory = track_forgetting(step, call.server_round, reply.metrics, _to_numpy(context.state.get(memory_key)),
                                      cfg.forgetting_first_visit)
    context.state[memory_key] = to_record(memory)
    if where is not None:
        client_state.save(where, call.server_round,
                          {part: _to_numpy(context.state.get(state_key(cid, part))) for part in PARTS},
                          session=int(config.get(client_state.SESSION, 0)))
    metrics = MetricRecord({**scores, PARTITION_ID: cid})
    content = RecordDict({"metrics": metrics})
    if step == "train":
        content["arrays"] = to_record(reply.arrays)
    for name, arrays in reply.extras.items():
        content[name] = to_record(arrays)
    if step == "train":
        content = adversary.corrupt(content, cid)  # unchanged unless BOUQUET_ADVERSARY targets cid
    return Message(content, reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which partition this node holds (node ids are random per run)."""
    cid, num_partitions = _identity(context)
    ray = sys.modules.get("ray")  # a simulated node: a Ray actor that lives for the whole run
    if ray is not None and ray.is_initialized() and not _data_path(context) and not _warming:
        worker = threading.Thread(target=warm_up, args=(dict(context.run_config), cid, num_partitions), daemon=True)
        worker.start()
        _warming.append(worker)
    return Message(RecordDict({"metrics": MetricRecord({PARTITION_ID: cid, NUM_PARTITIONS: num_partitions})}), reply_to=msg)


def dp_clipping_mod(msg: Message, context: Context, call_next) -> Message:
    """Flower's ``fixedclipping_mod`` when the server's DP wrapper asked for clipping (it sends
    ``clipping_norm``) and the method replies with the model alone; otherwise a pass-through.
    The server clips again (bouquet.strategies.userdp): this mod is the honest client's part."""
    config = msg.content.config_records.get("config")
    if config is None or KEY_CLIPPING_NORM not in config or len(msg.content.array_records) != 1:
        return call_next(msg, context)
    if get_method(RunConfig.from_run_config(context.run_config).method).strategy.extra_records:
        return call_next(msg, context)  # FedLoG also sends synthetic nodes: the server's clip alone applies
    return fixedclipping_mod(msg, context, call_next)


def _one_client(msg: Message, context: Context, step: str) -> Message:
    if step == "train":
        return dp_clipping_mod(msg, context, lambda m, c: _handle(m, c, step))
    return _handle(msg, context, step)


def _batch(msg: Message, context: Context, step: str) -> Message:
    """A batch of logical clients (``bouquet.multiplex``): each runs as if alone on a node, with
    a fresh Context whose state is its own from the store; one client's failure is its own."""
    if _data_path(context):
        raise ValueError("this SuperNode holds one institution's data (node-config data-path): it serves no "
                         "batch of logical clients; num-clients (multiplexing) is for simulation only")
    cfg = RunConfig.from_run_config(context.run_config)
    out = []
    for cid, content in multiplex.unpack(msg.content):
        try:
            if not 0 <= cid < cfg.num_clients:
                raise ValueError(f"client id {cid} is outside num-clients={cfg.num_clients}")
            config = dict(content["config"]) if "config" in content else {}
            node = {**context.node_config, "partition-id": cid, "num-partitions": cfg.num_clients}
            node.pop("model-arch", None)  # a worker is no site: the architecture follows the client id
            own = Context(run_id=context.run_id, node_id=context.node_id, node_config=node, state=RecordDict(),
                          run_config=context.run_config)
            where = _state_folder(own, cfg, cid, config)
            if where is None:
                raise ValueError("the server named no experiment (state-key): a logical client has no state store")
            stored = client_state.load_current(where, int(config.get("server-round", 0)),
                                               int(config.get(client_state.RESUMED_AFTER, 0)),
                                               int(config.get(client_state.SESSION, 0)))
            for part, arrays in stored.items():
                own.state[state_key(cid, part)] = to_record(arrays)
            own.state[state_key(cid, "restored")] = ConfigRecord({"round": -1})  # loaded above
            reply = _one_client(Message(content, metadata=msg.metadata), own, step)
            out.append((cid, reply.content, ""))
        except Exception as exc:  # noqa: BLE001 (one client's failure must not sink its batch)
            out.append((cid, None, f"{type(exc).__name__}: {exc}"))
    return Message(multiplex.pack_replies(out), reply_to=msg)


def _serve(msg: Message, context: Context, step: str) -> Message:
    _client_process()
    return (_batch if multiplex.MUX in msg.content else _one_client)(msg, context, step)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _serve(msg, context, "train")


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _serve(msg, context, "evaluate")
