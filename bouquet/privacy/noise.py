"""Where DP randomness comes from: the run seed (reproducible research) or the operating
system's CSPRNG (``dp-secure-noise = true``, a deployment). Both the Gaussian noise and the
Poisson sampling draw from it: amplification by sampling assumes nobody can predict who is
sampled, which a published seed would void."""

from __future__ import annotations

import os

import numpy as np

from bouquet.seeding import derive_seed


class Randomness:
    def __init__(self, seed: int, secure: bool) -> None:
        self.seed, self.secure = seed, secure

    def _generator(self, *purpose: object) -> np.random.Generator:
        return np.random.default_rng(derive_seed(self.seed, "dp", *purpose))

    def uniform(self, n: int, *purpose: object) -> np.ndarray:
        """n draws from U[0, 1)."""
        if self.secure:
            return (np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)) * 2.0**-53
        return self._generator("uniform", *purpose).random(n)

    def gaussian(self, shape: tuple[int, ...], std: float, *purpose: object) -> np.ndarray:
        """N(0, std²) in float64. Secure: Box-Muller on CSPRNG uniforms (no seed, no state);
        floating-point attacks on the low-order bits (Mironov 2012) are not addressed."""
        n = int(np.prod(shape))
        if n == 0 or std == 0.0:
            return np.zeros(shape)
        if not self.secure:
            return self._generator("gaussian", *purpose).normal(0.0, std, size=shape)
        m = (n + 1) // 2
        u1 = 1.0 - self.uniform(m)  # (0, 1]: log is finite
        u2 = self.uniform(m)
        r = np.sqrt(-2.0 * np.log(u1))
        z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])[:n]
        return (std * z).reshape(shape)

    def poisson_sample(self, items: list, rate: float, *purpose: object) -> list:
        """Each item independently with probability ``rate`` (order kept)."""
        draws = self.uniform(len(items), "sample", *purpose)
        return [item for item, u in zip(items, draws, strict=True) if u < rate]
