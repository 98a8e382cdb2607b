"""Local-only client: every client trains its own model and never averages — the floor."""

from __future__ import annotations

from bouquet.clients.base import ClientCall, ClientReply, arrays_to_model
from bouquet.clients.fedavg import FedAvgClient

PREFIX = "model/"


class LocalClient(FedAvgClient):
    """The model lives in the client's state; the first call starts from the shared init.
    Its scores (``local_model@*``) come with each training reply; there is no evaluate step."""

    def start_model(self, call: ClientCall):
        own = {k[len(PREFIX):]: v for k, v in call.state.items() if k.startswith(PREFIX)}
        return arrays_to_model(call.new_model(), own or call.arrays)

    def train(self, call: ClientCall) -> ClientReply:
        reply = super().train(call)
        state = {**reply.state, **{PREFIX + k: v for k, v in reply.arrays.items()}}
        return ClientReply({}, reply.metrics, state)  # nothing to aggregate: send no arrays
