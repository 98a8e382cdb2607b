"""User-level differential privacy (Chua et al., arXiv 2407.07737): the accountant, the
contribution bound k, and the planner behind ``bouquet privacy``."""

from bouquet.privacy.accounting import PrivacyLedger, calibrate_noise, epsilon
from bouquet.privacy.contribution import bounded_indices, els_default_k, uls_default_k, uls_noise_prediction

__all__ = ["PrivacyLedger", "bounded_indices", "calibrate_noise", "els_default_k", "epsilon", "uls_default_k",
           "uls_noise_prediction"]
