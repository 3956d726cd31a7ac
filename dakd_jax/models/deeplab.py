"""DeepLab-v2 ResNet-101 "multi" (AdaptSegNet/ADVENT): two ASPP-v2 heads, output stride 8.

Caffe-style bottlenecks (the stride sits in the first 1x1 conv), a ceil-mode 3x3/s2 max-pool,
layer3 dilated by 2 and layer4 by 4 (both stride 1), a projection shortcut on the first block of
every stage. ASPP-v2 heads sum 3x3 convs of dilation {6, 12, 18, 24}: `aux_head` reads layer3,
`main_head` reads layer4.
"""

import functools
import math
from typing import Any, Callable, ClassVar, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from dakd_jax.models import layers

# Per stage: (planes, blocks, stride, dilation); outputs have 4 * planes channels.
STAGES = ((64, 3, 1, 1), (128, 4, 2, 1), (256, 23, 1, 2), (512, 3, 1, 4))
ASPP_DILATIONS = (6, 12, 18, 24)
_EXPANSION = 4
_INIT = layers.normal_init(0.01)


def max_pool_ceil(x: jax.Array) -> jax.Array:
  """3x3 / stride 2 / padding 1 max-pool with torch's `ceil_mode=True` on [N, H, W, C].

  Ceil mode is emulated by extra -inf padding at the bottom/right so that the output size is
  ceil((H - 1) / 2) + 1 (e.g. 257 -> 129, 33 -> 17).
  """
  pads = [(0, 0)]
  for size in x.shape[1:3]:
    out = math.ceil((size + 2 - 3) / 2) + 1
    pads.append((1, (out - 1) * 2 + 3 - size - 1))
  pads.append((0, 0))
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), pads)


class Bottleneck(nn.Module):
  """1x1 (stride) -> 3x3 (dilation) -> 1x1 (x4 channels), BN after each, residual, ReLU."""
  planes: int
  stride: int = 1
  dilation: int = 1
  project: bool = False
  dtype: Any = jnp.float32
  norm: Callable[..., nn.Module] = layers.BatchNorm

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    bn = lambda name: self.norm(name=name)
    conv = lambda f, k, name, **kw: layers.conv2d(f, k, kernel_init=_INIT, dtype=self.dtype,
                                                  name=name, **kw)
    y = nn.relu(bn('bn1')(conv(self.planes, 1, 'conv1', stride=self.stride)(x), train))
    y = nn.relu(bn('bn2')(conv(self.planes, 3, 'conv2', dilation=self.dilation)(y), train))
    y = bn('bn3')(conv(self.planes * _EXPANSION, 1, 'conv3')(y), train)
    residual = x
    if self.project:
      residual = conv(self.planes * _EXPANSION, 1, 'downsample_conv', stride=self.stride)(x)
      residual = bn('downsample_bn')(residual, train)
    return nn.relu(y + residual)


class ResNetStage(nn.Module):
  """`num_blocks` residual blocks; the first has the stride and the projection shortcut.

  `block` is the block class (its fields planes, stride, dilation, project, dtype, norm; default
  the Caffe `Bottleneck`); `remat` recomputes each block in the backward pass.
  """
  planes: int
  num_blocks: int
  stride: int = 1
  dilation: int = 1
  dtype: Any = jnp.float32
  norm: Callable[..., nn.Module] = layers.BatchNorm
  remat: bool = False
  block: Any = Bottleneck

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    block = layers.maybe_remat(self.block, self.remat)
    for j in range(self.num_blocks):
      x = block(self.planes, stride=self.stride if j == 0 else 1, dilation=self.dilation,
                project=j == 0, dtype=self.dtype, norm=self.norm, name=f'block{j}')(x, train)
    return x


class ASPPHead(nn.Module):
  """ASPP-v2 classifier: sum of dilated 3x3 convs (with bias) over the first `live_branches`.

  All four branches always own parameters, so AdaptSegNet checkpoints (whose d=18/24 branches are
  dead because of an early `return`) load and count exactly; only the first `live_branches` are
  evaluated.
  """
  num_classes: int
  live_branches: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branches = [layers.conv2d(self.num_classes, 3, dilation=d, use_bias=True, kernel_init=_INIT,
                              dtype=self.dtype, name=f'branch{i}')
                for i, d in enumerate(ASPP_DILATIONS)]
    if self.is_initializing():
      for branch in branches[self.live_branches:]:
        branch(x)  # Creates the dead branches' parameters; outputs unused.
    return sum(branch(x) for branch in branches[:self.live_branches])


def resnet101_stages(images: jax.Array, train: bool, *, freeze_bn_affine: bool, bn_groups: int,
                     dtype: Any, remat: bool, width: float = 1.0) -> list[jax.Array]:
  """The DeepLab-v2 ResNet-101 body, called inside a compact `__call__` (its modules are the
  caller's `conv1`, `bn1`, `layer1`..`layer4`).

  Args:
    images: [N, H, W, 3].
    train: BatchNorm with batch statistics (updating `batch_stats`) or running statistics.
    width: channel multiplier of every layer (1.0 = the published network; small values make
      narrow networks for CPU runs and tests).

  Returns:
    The four stage outputs [N, h_i, w_i, 256 | 512 | 1024 | 2048] (times `width`); stages 2-4
    at stride 8.
  """
  norm = functools.partial(layers.BatchNorm, freeze_affine=freeze_bn_affine, groups=bn_groups,
                           dtype=dtype)
  x = layers.conv2d(layers.scaled_channels(64, width), 7, stride=2, padding=3, kernel_init=_INIT,
                    dtype=dtype, name='conv1')(images)
  x = max_pool_ceil(nn.relu(norm(name='bn1')(x, train)))
  features = []
  for i, (planes, blocks, stride, dilation) in enumerate(STAGES):
    x = ResNetStage(layers.scaled_channels(planes, width), blocks, stride=stride,
                    dilation=dilation, dtype=dtype, norm=norm, remat=remat,
                    name=f'layer{i + 1}')(x, train)
    features.append(x)
  return features


class DeepLabV2Multi(nn.Module):
  """DeepLab-v2 ResNet-101 with an auxiliary (layer3) and a main (layer4) ASPP head.

  Attributes:
    num_classes: output channels of both heads.
    aspp_branches: 4 (ADVENT, the paper) or 2 (AdaptSegNet's effective behaviour).
    dtype: compute dtype (parameters and BN statistics stay float32).
    freeze_bn_affine: BN scale/bias frozen: no gradient, and the optimiser leaves them out
      (default True, as in AdaptSegNet/ADVENT).
    bn_groups: BatchNorm statistics groups in training (per-device statistics; see
      `layers.BatchNorm`); a run-time choice that changes no variable.
    return_features: also return layer3 ('aux_features') and layer4 ('main_features') maps, and
      the list of the four stage outputs ('attentions', what MuHDi's frozen previous model
      distils from).
    remat: recompute every bottleneck in the backward pass instead of storing its activations.
    width: channel multiplier of the ResNet body (1.0 = the published network; narrow networks
      for CPU runs such as `configs/muhdi_synthetic.py`).
  """
  HEAD_MODULES: ClassVar[tuple[str, ...]] = ('main_head', 'aux_head')

  num_classes: int = 19
  aspp_branches: int = 4
  dtype: Any = jnp.float32
  freeze_bn_affine: bool = True
  bn_groups: int = 1
  return_features: bool = False
  remat: bool = False
  width: float = 1.0

  def backbone(self, images: jax.Array, train: bool) -> list[jax.Array]:
    """The stem and the four stages (call from a compact method): the outputs of layer1..4.

    Returns [N, h_i, w_i, C_i] maps with C_i = 256, 512, 1024, 2048; layer1 at stride 4, the
    others at stride 8. Each is the post-ReLU output of its stage's last block.
    """
    if self.aspp_branches not in (2, 4):
      raise ValueError(f'{type(self).__name__}: aspp_branches must be 2 or 4, got '
                       f'{self.aspp_branches}')
    return resnet101_stages(images, train, freeze_bn_affine=self.freeze_bn_affine,
                            bn_groups=self.bn_groups, dtype=self.dtype, remat=self.remat,
                            width=self.width)

  def head(self, name: str) -> ASPPHead:
    """An ASPP-v2 head named `name` (call from a compact method)."""
    return ASPPHead(self.num_classes, self.aspp_branches, self.dtype, name=name)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> Dict[str, jax.Array]:
    """Maps images [N, H, W, 3] to logits {'aux', 'main'} [N, h, w, C] at output stride 8.

    h = ceil(p / 2) with p = ceil((ceil(H / 2) - 1) / 2) + 1 the pooled size (512 -> 65, 65 -> 9).
    `train=True` normalises with batch statistics and updates `batch_stats` (make it mutable).
    """
    features = self.backbone(images, train)
    out = {'aux': self.head('aux_head')(features[2]), 'main': self.head('main_head')(features[3])}
    if self.return_features:
      out['aux_features'] = features[2]
      out['main_features'] = features[3]
      out['attentions'] = features
    return out
