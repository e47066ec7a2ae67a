"""The samples of pairs (m = 2): ordered class pairs and Beta-distributed mixing weights.

:func:`ufm.solver.problem.build_problem` draws them (the m-class mixtures are in
:mod:`.mixture_samples`).
"""

from __future__ import annotations

import torch


def sample_pairs(config, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Ordered class pairs (c, c') of a :class:`~.problem.UFMConfig` as two int64 vectors,
    in a fixed order: all K^2, the K same-class, the K(K-1) different-class, or ``num_pairs``
    of all K^2 drawn without replacement."""
    K = config.K
    c = torch.arange(K).repeat_interleave(K)
    c_prime = torch.arange(K).repeat(K)
    if config.pairs == "same":
        keep = c == c_prime
    elif config.pairs == "different":
        keep = c != c_prime
    else:
        keep = torch.ones_like(c, dtype=torch.bool)
    c, c_prime = c[keep], c_prime[keep]
    if config.pairs == "random":
        chosen = torch.randperm(K * K, generator=generator)[: config.num_pairs].sort().values
        c, c_prime = c[chosen], c_prime[chosen]
    return c, c_prime


def beta_sample(beta, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` draws of ``beta`` (a symmetric Beta distribution) from ``generator``.

    torch's Beta sampler has no generator argument: the draws are x / (x + y) of two Gamma
    draws made with it.
    """
    a = beta.concentration1.item()
    x = torch._standard_gamma(torch.full((size,), a, dtype=torch.float64), generator=generator)
    y = torch._standard_gamma(torch.full((size,), a, dtype=torch.float64), generator=generator)
    return x / (x + y)
