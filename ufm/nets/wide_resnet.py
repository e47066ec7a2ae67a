r"""Wide residual networks for small images (CIFAR 32x32, Fashion-MNIST 28x28) as hidden blocks.

WRN-``depth``-``k`` of Zagoruyko & Komodakis ("Wide residual networks", BMVC 2016), the
CIFAR variant: a 3x3 convolution to 16 channels, then three groups of
:math:`n = (\text{depth} - 4) / 6` pre-activation wide basic blocks with :math:`16k`,
:math:`32k` and :math:`64k` channels and strides 1, 2 and 2, a final BatchNorm-ReLU and global
average pooling. A block is BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3 plus the shortcut: the
identity where the shape stays, else a 1x1 convolution of the pre-activated input (the
original implementation's choice). The depth is :math:`6n + 4`: the stem, the :math:`2n`
convolutions of each group and the three 1x1 shortcut convolutions, the count of the original
code (WRN-16-4 has n = 2, WRN-40-10 n = 6).

Fisher, Meng & Papyan (ICLR 2024) train WRN-40-10. Its original classifier (640 x K) is
replaced by the project's head: Linear-BN-ReLU to ``feature_dim`` where that differs from
:math:`64k` (as for the ResNet-18 of :mod:`ufm.nets.models`), then the
:class:`~ufm.nets.models.LinearClassifier`.

The hidden blocks, in order: the stem, group 1, group 2, group 3, the head (final BN-ReLU,
pooling and the projection). ``mixup_layer`` k mixes the output of block k, so 1 to 3 mix the
output of the stem and the first two groups (the layers manifold mixup mixes, Verma et al.
2019) and 5 the features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_float, check_int

WRN_DEFAULT_DEPTH = 16
"""The WRN depth that ``depth`` 0 (or the MLP's default 2) stands for: WRN-16."""
WRN_DEFAULT_WIDTH = 4
"""The widening factor k that ``width`` 0 stands for: WRN-16-4 by default."""


def check_wrn_depth(depth: int) -> int:
    """The number n of blocks per group of a WRN of ``depth`` = 6n + 4 layers, n >= 1.

    Raises
    ------
    ValueError
        Unless ``depth`` is 10, 16, 22, 28, 34, 40, ...
    """
    depth = check_int("depth", depth)
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(
            f"depth of model 'wrn' must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 40, ...; "
            f"0 for WRN-{WRN_DEFAULT_DEPTH}), got {depth}"
        )
    return (depth - 4) // 6


class WideBasicBlock(nn.Module):
    """Pre-activation wide basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-dropout-conv3x3.

    The shortcut is the identity where channels and size stay; otherwise a 1x1 convolution
    with the block's stride of the pre-activated input (Zagoruyko & Komodakis 2016).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        skip = x if self.shortcut is None else self.shortcut(activated)
        return out + skip


def _initialise(module: nn.Module) -> None:
    """He-normal convolutions (fan out, as the original WRN code); BN weight 1, bias 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def wide_resnet_blocks(
    input_shape: Sequence[int],
    depth: int,
    widen: int,
    feature_dim: int,
    dropout: float = 0.0,
) -> list[nn.Module]:
    """The five hidden blocks of WRN-``depth``-``widen``: stem, three groups, head.

    Parameters
    ----------
    input_shape : (C, H, W) of one image (any H, W >= 1; CIFAR's is (3, 32, 32)).
    depth : 6n + 4 (see :func:`check_wrn_depth`).
    widen : the widening factor k >= 1; the groups have 16k, 32k, 64k channels.
    feature_dim : d; the head ends in Linear-BN-ReLU to d unless d = 64k.
    dropout : dropout probability between the convolutions of a block, in [0, 1); 0 (the
        default, and what ``ufm train`` builds) leaves it out.
    """
    if len(input_shape) != 3:
        raise ValueError(
            f"model 'wrn' needs image inputs of shape (C, H, W), got {tuple(input_shape)}"
        )
    n = check_wrn_depth(depth)
    widen = check_int("width", widen, minimum=1)
    dropout = check_float("dropout", dropout, 0.0, 1.0, high_open=True)
    widths = (16 * widen, 32 * widen, 64 * widen)
    blocks: list[nn.Module] = [nn.Conv2d(input_shape[0], 16, 3, padding=1, bias=False)]
    c_in = 16
    for c_out, stride in zip(widths, (1, 2, 2), strict=True):
        group = [WideBasicBlock(c_in, c_out, stride, dropout)]
        group += [WideBasicBlock(c_out, c_out, 1, dropout) for _ in range(n - 1)]
        blocks.append(nn.Sequential(*group))
        c_in = c_out
    head: list[nn.Module] = [
        nn.BatchNorm2d(c_in),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    if feature_dim != c_in:
        head += [nn.Linear(c_in, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU()]
    blocks.append(nn.Sequential(*head))
    for block in blocks:
        _initialise(block)
    return blocks
