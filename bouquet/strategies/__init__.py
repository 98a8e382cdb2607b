"""Server side of each method: a Flower strategy with Bouquet's hooks; the round loop and the
reply gate that work around any Flower strategy."""

from bouquet.strategies.base import BouquetStrategy
from bouquet.strategies.replies import ReplyRules, reply_problem
from bouquet.strategies.rounds import RunFailed, Stop, run_rounds, train_round

__all__ = ["BouquetStrategy", "ReplyRules", "RunFailed", "Stop", "reply_problem", "run_rounds", "train_round"]
