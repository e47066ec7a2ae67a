r"""A small Vision Transformer for 32x32 images, as hidden blocks of a :class:`MixupNet`.

The ViT of Dosovitskiy et al. ("An image is worth 16x16 words: Transformers for image
recognition at scale", ICLR 2021), with patches of 4x4 pixels as is usual for CIFAR's 32x32
images (64 patches; Fashion-MNIST's 28x28 gives 49), written with ``torch.nn`` only:

* **patch embedding**: a ``patch`` x ``patch`` convolution with stride ``patch`` to the
  embedding width D (a linear map of every flattened patch), a learned class token prepended
  and a learned position embedding added, giving tokens (B, 1 + T, D);
* ``depth`` **pre-norm transformer blocks**: :math:`x + \mathrm{MSA}(\mathrm{LN}(x))`, then
  :math:`x + \mathrm{MLP}(\mathrm{LN}(x))` with an MLP D -> 4D -> D with GELU;
  multi-head self-attention with heads of 64 dimensions where D is a multiple of 64 (D = 192:
  3 heads, ViT-Tiny; D = 768: 12 heads, ViT-B), otherwise a single head;
* **head**: a final LayerNorm, the class token's output, and Linear-BN-ReLU to ``feature_dim``
  where that differs from D (as for the ResNets here), before the
  :class:`~ufm.nets.models.LinearClassifier`.

Fisher, Meng & Papyan (ICLR 2024) train ViT-B (D = 768, 12 blocks). The hidden blocks, in
order: the patch embedding, every transformer block, the head; ``mixup_layer`` k >= 1 mixes
the token sequence after block k (manifold mixup, Verma et al. 2019). Dropout is left out.
Weights start as in the reference ViT: truncated normal with standard deviation 0.02 for the
linear maps, the class token and the position embedding, zero biases, unit LayerNorms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._checks import check_int

PATCH = 4
"""Side of a square patch, in pixels."""
VIT_DEFAULT_WIDTH = 192
"""The embedding width D that ``width`` 0 stands for (ViT-Tiny's)."""
VIT_DEFAULT_DEPTH = 6
"""The number of transformer blocks that ``depth`` 0 stands for."""
HEAD_DIM = 64
"""Dimensions per attention head where the width allows (ViT-B's)."""
MLP_RATIO = 4
"""Hidden width of a block's MLP over the embedding width."""


def attention_heads(width: int) -> int:
    """Heads of :data:`HEAD_DIM` dimensions where ``width`` is a multiple of it, else one."""
    return width // HEAD_DIM if width % HEAD_DIM == 0 else 1


class PatchEmbedding(nn.Module):
    """Image (B, C, H, W) -> tokens (B, 1 + HW / patch^2, D): patches, class token, positions."""

    def __init__(self, channels: int, height: int, width_px: int, dim: int, patch: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(channels, dim, patch, stride=patch)
        tokens = (height // patch) * (width_px // patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.zeros(1, 1 + tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.project(x).flatten(2).transpose(1, 2)  # (B, T, D)
        cls = self.class_token.expand(len(x), -1, -1)
        return torch.cat([cls, patches], dim=1) + self.position


class TransformerBlock(nn.Module):
    """Pre-norm block: x + MSA(LN(x)), then x + MLP(LN(x)) (Dosovitskiy et al. 2021, eq. 2-3)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = MLP_RATIO) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ClassTokenHead(nn.Module):
    """Final LayerNorm, the class token's output (B, D), and Linear-BN-ReLU to d if d != D."""

    def __init__(self, dim: int, feature_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Identity()
        if feature_dim != dim:
            self.project = nn.Sequential(
                nn.Linear(dim, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU()
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.norm(x)[:, 0])


def _initialise(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.MultiheadAttention):
            nn.init.trunc_normal_(layer.in_proj_weight, std=0.02)
            nn.init.zeros_(layer.in_proj_bias)
            nn.init.trunc_normal_(layer.out_proj.weight, std=0.02)
            nn.init.zeros_(layer.out_proj.bias)
        elif isinstance(layer, PatchEmbedding):
            nn.init.trunc_normal_(layer.class_token, std=0.02)
            nn.init.trunc_normal_(layer.position, std=0.02)


def vit_blocks(
    input_shape: Sequence[int], width: int, depth: int, feature_dim: int, patch: int = PATCH
) -> list[nn.Module]:
    """The hidden blocks of a ViT: patch embedding, ``depth`` transformer blocks, head.

    Parameters
    ----------
    input_shape : (C, H, W) with H and W multiples of ``patch``.
    width : embedding width D >= 1.
    depth : number of transformer blocks >= 1.
    feature_dim : d; the head ends in Linear-BN-ReLU to d unless d = D.
    patch : side of a patch in pixels.
    """
    if len(input_shape) != 3:
        raise ValueError(
            f"model 'vit' needs image inputs of shape (C, H, W), got {tuple(input_shape)}"
        )
    channels, height, width_px = (int(n) for n in input_shape)
    if height % patch or width_px % patch:
        raise ValueError(
            f"model 'vit' cuts images into {patch}x{patch} patches: H and W must be multiples "
            f"of {patch}, got inputs of shape {tuple(input_shape)}"
        )
    width = check_int("width", width, minimum=1)
    depth = check_int("depth", depth, minimum=1)
    blocks: list[nn.Module] = [PatchEmbedding(channels, height, width_px, width, patch)]
    blocks += [TransformerBlock(width, attention_heads(width)) for _ in range(depth)]
    blocks.append(ClassTokenHead(width, feature_dim))
    for block in blocks:
        _initialise(block)
    return blocks
