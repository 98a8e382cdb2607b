"""Server side of each method: a Flower strategy with Bouquet's reproducibility and robustness."""

from bouquet.strategies.base import BouquetStrategy, RunFailed
from bouquet.strategies.replies import ReplyRules, reply_problem

__all__ = ["BouquetStrategy", "ReplyRules", "RunFailed", "reply_problem"]
