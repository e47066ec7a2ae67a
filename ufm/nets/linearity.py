r"""Layer-wise linearity of a network along input segments (Chaudhry et al. 2022).

Chaudhry et al., "When does mixup promote local linearity in learned representations?", 2022,
ask how far each hidden block's output is from affine along the segment between two inputs;
:func:`layer_linearity` measures it in eval mode, without gradients.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .forward import mixed_inputs, pair_chunks
from .probe import NetworkProbe

FLOAT = torch.float64


def layer_linearity(
    probe: NetworkProbe,
    x: torch.Tensor,
    i: np.ndarray,
    j: np.ndarray,
    lams: np.ndarray,
) -> list[float]:
    r"""Non-linearity of the output f of every layer of ``probe.layers`` along input segments
    (Chaudhry et al. 2022):

    .. math:: \operatorname{mean}_{(i,j),\lambda}\ \frac{\|f(\lambda x_i + (1-\lambda)x_j) -
              (\lambda f(x_i) + (1-\lambda) f(x_j))\|}{\|f(x_i) - f(x_j)\|}

    over the pairs ``(i, j)`` and the interior lams of ``lams``; pairs with
    :math:`f(x_i) = f(x_j)` are left out of that layer's mean. 0 for a layer that is affine
    along every segment. One value per layer, in the order of ``probe.layers`` (none without
    layers).
    """
    interior = np.asarray([lam for lam in lams if 0.0 < lam < 1.0], dtype=np.float64)
    lam_t = torch.as_tensor(interior, dtype=probe.dtype, device=probe.device)
    lam_64 = torch.as_tensor(interior, dtype=FLOAT).reshape(1, -1, 1)
    count = len(probe.layers)
    totals, counts = np.zeros(count), np.zeros(count)
    if not count:
        return []
    with probe.running():
        for rows in pair_chunks(len(i), len(interior), probe.batch_size):
            x_i = x[torch.as_tensor(i[rows])].to(probe.device)
            x_j = x[torch.as_tensor(j[rows])].to(probe.device)
            P = len(x_i)
            outputs = probe.layer_outputs(torch.cat([x_i, x_j, mixed_inputs(x_i, x_j, lam_t)]))
            for layer, output in enumerate(outputs):
                f = output.to(FLOAT).cpu()
                f_i, f_j, f_mix = f[:P], f[P : 2 * P], f[2 * P :].reshape(P, len(interior), -1)
                chord = lam_64 * f_i[:, None] + (1 - lam_64) * f_j[:, None]
                gap = torch.linalg.vector_norm(f_mix - chord, dim=-1)
                length = torch.linalg.vector_norm(f_i - f_j, dim=-1)
                keep = length > 0
                totals[layer] += float((gap[keep] / length[keep, None]).sum())
                counts[layer] += int(keep.sum()) * len(interior)
    return [float(t / n) if n else math.nan for t, n in zip(totals, counts)]
