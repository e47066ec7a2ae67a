r"""Networks as a sequence of hidden blocks followed by a linear classifier.

Every model is a :class:`MixupNet`: ``blocks`` (an ``nn.ModuleList``) map the input to the
penultimate features :math:`h\in\mathbb R^d` (the output of the last block), and
``classifier`` computes :math:`z = Wh + b`. Splitting at block boundaries is what manifold
mixup, the layer-wise linearity measurement and the feature measurements need.

* ``mlp`` (default): ``depth`` blocks Linear-BatchNorm-ReLU of ``width`` units, then a block
  Linear-BatchNorm-ReLU to ``d`` units.
* ``cnn``: three blocks [conv3-BN-ReLU] x 2 + max-pool with ``width``, 2 ``width``,
  4 ``width`` channels, then global average pooling and Linear-BN-ReLU to ``d``. 1-D
  (C, L) or 2-D (C, H, W) inputs.
* ``resnet18``: the CIFAR variant of ResNet-18 (He et al., "Deep residual learning for image
  recognition", CVPR 2016): 3x3 stem without max-pool, four stages of two basic blocks,
  global average pooling, and Linear-BN-ReLU to ``d`` when ``d`` differs from 8 ``width``.
  (C, H, W) inputs.
* ``wrn``: WRN-``depth``-``width``, the wide residual network of Zagoruyko & Komodakis (BMVC
  2016) that Fisher et al. (2024) train as WRN-40-10 (:mod:`ufm.nets.wide_resnet`); depth
  6n + 4, 0 (or the MLP's default 2) for WRN-16; width 0 for k = 4. (C, H, W) inputs.
* ``vit``: a Vision Transformer with 4x4 patches (Dosovitskiy et al., ICLR 2021;
  :mod:`ufm.nets.vit`): ``width`` the embedding width (0: 192), ``depth`` the transformer
  blocks (0: 6). (C, H, W) inputs with H and W multiples of 4.

Models are registered by name in :data:`MODEL_BUILDERS` (with their default width in
:data:`DEFAULT_WIDTH`): a new architecture is a new entry, :func:`build_model` is unchanged.

The classifier is learned or a fixed simplex ETF (:func:`ufm.etf.simplex_etf`) held as a
buffer, so no optimiser ever sees it (Zhu et al. 2021 and Fisher et al. 2024 train with a fixed
ETF classifier).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice
from ..etf import simplex_etf
from .vit import VIT_DEFAULT_DEPTH, VIT_DEFAULT_WIDTH, vit_blocks
from .wide_resnet import WRN_DEFAULT_DEPTH, WRN_DEFAULT_WIDTH, check_wrn_depth, wide_resnet_blocks

DEFAULT_WIDTH = {
    "mlp": 256,
    "cnn": 32,
    "resnet18": 64,
    "wrn": WRN_DEFAULT_WIDTH,
    "vit": VIT_DEFAULT_WIDTH,
}
"""The width that ``width`` 0 stands for: MLP hidden units, CNN and ResNet-18 base channels,
the WRN widening factor k, the ViT embedding width."""


class ModelSpec(Protocol):
    """The fields :func:`build_model` reads; :class:`ufm.nets.config.TrainConfig` has them all.

    Stated here rather than imported, so that this module does not depend on the
    configuration module (which reads :data:`MODELS` from here).
    """

    model: str
    width: int
    depth: int
    feature_dim: int
    batch_norm: bool
    classifier: str
    bias: bool
    etf_scale: float
    seed: int
    mixup_layer: int


class LinearClassifier(nn.Module):
    """:math:`z = Wh + b`, ``weight`` (K, d) learned or a fixed simplex ETF buffer.

    ``fixed_etf=True`` stores :func:`ufm.etf.simplex_etf` (K, d) with row norm
    ``etf_scale``, rotated by a Haar-random orthogonal matrix from ``etf_seed``, as a float32
    buffer: it moves with the model and is saved in its state, but it is not a parameter.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        fixed_etf: bool = False,
        bias: bool = False,
        etf_scale: float = 1.0,
        etf_seed: int = 0,
    ) -> None:
        super().__init__()
        self.fixed_etf = fixed_etf
        if fixed_etf:
            etf = simplex_etf(num_classes, feature_dim, scale=etf_scale, seed=etf_seed)
            self.register_buffer("weight", etf.to(torch.float32))
        else:
            self.weight = nn.Parameter(torch.empty(num_classes, feature_dim))
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.weight, self.bias)


class MixupNet(nn.Module):
    """Hidden ``blocks`` followed by a :class:`LinearClassifier`."""

    def __init__(self, blocks: list[nn.Module], classifier: LinearClassifier) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.classifier = classifier

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Apply blocks ``start`` .. ``stop - 1`` (0-based) to ``x``."""
        for block in self.blocks[start:stop]:
            x = block(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features h (N, d)."""
        return self.run_blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.run_blocks(x))

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every block, first to last (the last is the features)."""
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs


def _dense_block(n_in: int, n_out: int, batch_norm: bool = True, flatten: bool = False):
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    layers.append(nn.Linear(n_in, n_out))
    if batch_norm:
        layers.append(nn.BatchNorm1d(n_out))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def mlp_blocks(input_shape, width: int, depth: int, feature_dim: int, batch_norm: bool = True):
    """MLP blocks: ``depth`` hidden layers of ``width`` units, then the ``feature_dim`` layer."""
    sizes = [math.prod(input_shape)] + [width] * depth + [feature_dim]
    return [
        _dense_block(n_in, n_out, batch_norm, flatten=(k == 0))
        for k, (n_in, n_out) in enumerate(itertools.pairwise(sizes))
    ]


def _conv_layers(dims: int):
    if dims == 1:
        return nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d
    return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d


def cnn_blocks(input_shape, width: int, feature_dim: int):
    """Small CNN blocks for (C, L) or (C, H, W) inputs; pooling stops at spatial size 1."""
    if len(input_shape) not in (2, 3):
        raise ValueError(
            f"model 'cnn' needs inputs of shape (C, L) or (C, H, W), got {tuple(input_shape)}"
        )
    conv, norm, pool, global_pool = _conv_layers(len(input_shape) - 1)
    channels = [input_shape[0], width, 2 * width, 4 * width]
    size = min(input_shape[1:])
    blocks: list[nn.Module] = []
    for c_in, c_out in itertools.pairwise(channels):
        layers = [
            conv(c_in, c_out, 3, padding=1, bias=False),
            norm(c_out),
            nn.ReLU(),
            conv(c_out, c_out, 3, padding=1, bias=False),
            norm(c_out),
            nn.ReLU(),
        ]
        if size >= 2:
            layers.append(pool(2))
            size //= 2
        blocks.append(nn.Sequential(*layers))
    blocks.append(
        nn.Sequential(global_pool(1), nn.Flatten(), *_dense_block(channels[-1], feature_dim))
    )
    return blocks


class BasicBlock(nn.Module):
    """Residual block conv3-BN-ReLU-conv3-BN plus shortcut, then ReLU (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18_blocks(input_shape, width: int, feature_dim: int):
    """CIFAR-style ResNet-18 blocks: stem, four stages, pooling (+ projection to d)."""
    if len(input_shape) != 3:
        raise ValueError(
            f"model 'resnet18' needs image inputs of shape (C, H, W), got {tuple(input_shape)}"
        )
    stem = nn.Sequential(
        nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
    )
    blocks: list[nn.Module] = [stem]
    c_in = width
    for stage, stride in enumerate((1, 2, 2, 2)):
        c_out = width * 2**stage
        blocks.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
        c_in = c_out
    head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if feature_dim != c_in:
        head.extend(_dense_block(c_in, feature_dim))
    blocks.append(nn.Sequential(*head))
    return blocks


def resolved_depth(model: str, depth: int) -> int:
    """The depth :func:`build_model` gives model ``model`` for the configured ``depth``.

    ``mlp``: ``depth`` hidden layers. ``wrn``: the WRN depth 6n + 4, checked
    (:func:`ufm.nets.wide_resnet.check_wrn_depth`); 0 and 2 (the MLP's default, no WRN depth)
    stand for WRN-16. ``vit``: ``depth`` transformer blocks, 0 for 6. ``cnn`` and
    ``resnet18`` have a fixed depth and ignore it.

    Raises
    ------
    ValueError
        For a ``wrn`` depth other than 0, 2 or 6n + 4.
    """
    if model == "wrn":
        depth = WRN_DEFAULT_DEPTH if depth in (0, 2) else depth
        check_wrn_depth(depth)
    elif model == "vit":
        depth = depth or VIT_DEFAULT_DEPTH
    return depth


BlockBuilder = Callable[[ModelSpec, Sequence[int], int, int], list[nn.Module]]
"""``builder(config, input_shape, width, depth)`` -> hidden blocks, ``width`` and ``depth``
already resolved (:data:`DEFAULT_WIDTH`, :func:`resolved_depth`)."""


def _mlp(config: ModelSpec, input_shape, width: int, depth: int) -> list[nn.Module]:
    return mlp_blocks(input_shape, width, depth, config.feature_dim, config.batch_norm)


def _cnn(config: ModelSpec, input_shape, width: int, depth: int) -> list[nn.Module]:
    return cnn_blocks(input_shape, width, config.feature_dim)


def _resnet18(config: ModelSpec, input_shape, width: int, depth: int) -> list[nn.Module]:
    return resnet18_blocks(input_shape, width, config.feature_dim)


def _wrn(config: ModelSpec, input_shape, width: int, depth: int) -> list[nn.Module]:
    return wide_resnet_blocks(input_shape, depth, width, config.feature_dim)


def _vit(config: ModelSpec, input_shape, width: int, depth: int) -> list[nn.Module]:
    return vit_blocks(input_shape, width, depth, config.feature_dim)


MODEL_BUILDERS: dict[str, BlockBuilder] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "resnet18": _resnet18,
    "wrn": _wrn,
    "vit": _vit,
}
"""Model name -> the builder of its hidden blocks; every name also has a :data:`DEFAULT_WIDTH`."""
MODELS = tuple(MODEL_BUILDERS)


def build_model(config: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> MixupNet:
    """The network named by ``config.model`` for inputs of ``input_shape`` and K classes.

    Parameters are initialised from ``config.seed`` on the CPU, so the initial network does
    not depend on the device it is later moved to.

    Parameters
    ----------
    config : a :class:`ufm.nets.TrainConfig`, or anything with the fields of
        :class:`ModelSpec`.
    input_shape : shape of one input, without the batch dimension.
    num_classes : K.

    Raises
    ------
    ValueError
        When ``config.mixup_layer`` exceeds the number of hidden blocks, or the inputs do not
        suit the model.
    """
    check_choice("model", config.model, MODELS)
    width = config.width or DEFAULT_WIDTH[config.model]
    depth = resolved_depth(config.model, config.depth)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        blocks = MODEL_BUILDERS[config.model](config, input_shape, width, depth)
        classifier = LinearClassifier(
            config.feature_dim,
            num_classes,
            fixed_etf=config.classifier == "fixed_etf",
            bias=config.bias,
            etf_scale=config.etf_scale,
            etf_seed=config.seed,
        )
        model = MixupNet(blocks, classifier)
    if config.mixup_layer > model.num_blocks:
        raise ValueError(
            f"mixup_layer={config.mixup_layer} is beyond the {model.num_blocks} hidden blocks of "
            f"model {config.model!r}: allowed 0 (input mixup) to {model.num_blocks}"
        )
    return model
