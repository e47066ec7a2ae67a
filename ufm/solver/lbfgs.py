"""Limited-memory BFGS directions for flat parameter vectors (torch, any device).

Only the quasi-Newton memory lives here (two-loop recursion, Nocedal & Wright, Numerical
Optimization, 2nd ed., Algorithm 7.4); the line search belongs to the caller, whose function
evaluations are expensive (each one solves every per-sample feature problem). The memory is
a plain state dict so that a checkpoint can resume the iteration exactly.
"""

from __future__ import annotations

import torch


class LBFGSMemory:
    """Curvature pairs (s_k, y_k) and the two-loop recursion."""

    def __init__(self, size: int = 20) -> None:
        if size < 1:
            raise ValueError(f"L-BFGS memory size must be >= 1, got {size}")
        self.size = size
        self.s: list[torch.Tensor] = []
        self.y: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.s)

    def update(self, s: torch.Tensor, y: torch.Tensor) -> bool:
        """Store the pair if it has positive curvature; return whether it was stored."""
        sy = torch.dot(s, y)
        if not bool(sy > 1e-12 * torch.linalg.vector_norm(s) * torch.linalg.vector_norm(y)):
            return False
        self.s.append(s.clone())
        self.y.append(y.clone())
        if len(self.s) > self.size:
            self.s.pop(0)
            self.y.pop(0)
        return True

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """Quasi-Newton direction -H_k grad (steepest descent when the memory is empty)."""
        q = grad.clone()
        if not self.s:
            return -q
        alphas = []
        rhos = [1.0 / torch.dot(y, s) for s, y in zip(self.s, self.y)]
        for s, y, rho in zip(reversed(self.s), reversed(self.y), reversed(rhos)):
            alpha = rho * torch.dot(s, q)
            q -= alpha * y
            alphas.append(alpha)
        s, y = self.s[-1], self.y[-1]
        q *= torch.dot(s, y) / torch.dot(y, y)
        for (s, y, rho), alpha in zip(zip(self.s, self.y, rhos), reversed(alphas)):
            beta = rho * torch.dot(y, q)
            q += (alpha - beta) * s
        return -q

    def state_dict(self) -> dict:
        return {"size": self.size, "s": list(self.s), "y": list(self.y)}

    def load_state_dict(self, state: dict) -> None:
        self.size = int(state["size"])
        self.s = list(state["s"])
        self.y = list(state["y"])
