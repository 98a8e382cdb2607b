"""FedAvg client: train the global model locally, send it back (McMahan et al., 2017)."""

from __future__ import annotations

from torch import nn

from bouquet import metrics as M
from bouquet.clients.base import ClientCall, ClientReply, arrays_to_model, model_to_arrays
from bouquet.clients.training import (
    BatchLoss,
    ExtraLoss,
    module_predictor,
    num_train_examples,
    setting_scores,
    train_local,
)
from bouquet.seeding import derive_seed


class FedAvgClient:
    """Local SGD from the global model; subclasses change the loss via :meth:`extra_loss`."""

    def extra_loss(self, call: ClientCall, model: nn.Module) -> ExtraLoss | None:
        """A term added to the loss; ``model`` is still at its starting point when this is called."""
        return None

    def batch_loss(self, call: ClientCall, model: nn.Module) -> BatchLoss | None:
        """Replaces cross-entropy per batch (e.g. distillation); None keeps cross-entropy."""
        return None

    def start_model(self, call: ClientCall) -> nn.Module:
        return arrays_to_model(call.new_model(), call.arrays)

    def fit(self, call: ClientCall, model: nn.Module, *, extra_loss: ExtraLoss | None = None,
            batch_loss: BatchLoss | None = None, optimizer_state: dict | None = None) -> float:
        """The shared local loop with this run's settings; returns the mean batch loss."""
        return train_local(
            model,
            call.data,
            epochs=call.run.local_epochs,
            batch_size=call.run.batch_size,
            lr=call.learning_rate,
            seed=derive_seed(call.run.seed, call.server_round, call.cid),
            extra_loss=extra_loss,
            optimizer=call.run.optimizer,
            weight_decay=call.run.weight_decay,
            batch_loss=batch_loss,
            optimizer_state=optimizer_state,
        )

    def train(self, call: ClientCall) -> ClientReply:
        model = self.start_model(call)
        opt_state = kept_optimizer_state(call)
        loss = self.fit(call, model, extra_loss=self.extra_loss(call, model), batch_loss=self.batch_loss(call, model),
                        optimizer_state=opt_state)
        metrics = {
            M.NUM_EXAMPLES: num_train_examples(call.data),
            M.TRAIN_LOSS: loss,
            **setting_scores(module_predictor(model), call.data, "local_model", call.new_client),
        }
        return ClientReply(model_to_arrays(model), metrics, with_optimizer_state(call.state, opt_state))

    def evaluate(self, call: ClientCall) -> ClientReply:
        """The new global model in every local setting (``new_client`` is scored on the server)."""
        scores = setting_scores(module_predictor(self.start_model(call)), call.data, "global_model")
        return ClientReply({}, {M.NUM_EXAMPLES: num_train_examples(call.data), **scores}, call.state)


OPTIMIZER = "optimizer/"


def stored_optimizer_state(state: dict) -> dict:
    """The optimizer arrays a client's state holds (empty on its first round)."""
    return {k[len(OPTIMIZER):]: v for k, v in state.items() if k.startswith(OPTIMIZER)}


def kept_optimizer_state(call: ClientCall) -> dict | None:
    """The optimizer state this client kept last round (``keep-optimizer-state``), else None."""
    return stored_optimizer_state(call.state) if call.run.keep_optimizer_state else None


def with_optimizer_state(state: dict, opt_state: dict | None) -> dict:
    if opt_state is None:
        return state
    return {**{k: v for k, v in state.items() if not k.startswith(OPTIMIZER)},
            **{OPTIMIZER + k: v for k, v in opt_state.items()}}
