"""Ditto client (Li et al., ICML 2021): each round the client trains the global model as in
FedAvg (its upload) and, separately, a personal model kept in its state with a proximal pull
(lambda/2)·‖v − w_global‖² toward the global weights it received. Its ``local_model`` scores
are the personal model's."""

from __future__ import annotations

from bouquet import metrics as M
from bouquet.clients.base import ClientCall, ClientReply, arrays_to_model, model_to_arrays
from bouquet.clients.fedavg import FedAvgClient
from bouquet.clients.fedprox import proximal_term
from bouquet.clients.training import module_predictor, num_train_examples, setting_scores

PREFIX = "personal/"


class DittoClient(FedAvgClient):
    def train(self, call: ClientCall) -> ClientReply:
        model = self.start_model(call)
        anchor = [p.detach().clone() for p in model.parameters()]  # the received global weights
        self.fit(call, model)  # the global objective: plain local training, uploaded
        own = {k[len(PREFIX):]: v for k, v in call.state.items() if k.startswith(PREFIX)}
        personal = arrays_to_model(call.new_model(), own or call.arrays)
        lam = call.run.ditto_lambda
        loss = self.fit(call, personal, extra_loss=(lambda m: proximal_term(m, anchor, lam)) if lam else None)
        metrics = {
            M.NUM_EXAMPLES: num_train_examples(call.data),
            M.TRAIN_LOSS: loss,
            **setting_scores(module_predictor(personal), call.data, "local_model", call.new_client),
        }
        state = {**call.state, **{PREFIX + k: v for k, v in model_to_arrays(personal).items()}}
        return ClientReply(model_to_arrays(model), metrics, state)
