"""DRN-D-22 / DRN-D-38 segmentation networks with DAKD's two heads (multi-level `DRNSeg`).

Layer table (fyu/drn, D architecture): channels (16, 32, 64, 128, 256, 512, 512, 512).
  layer0: 7x7 conv + BN + ReLU; layer1/layer2: 3x3 conv + BN + ReLU stacks (layer2 stride 2);
  layer3..layer6: BasicBlocks (layer3/4 stride 2, layer5/6 dilation 2/4 in every block);
  layer7: 3x3 dilation-2 conv stack, layer8: 3x3 conv stack (no residuals).
Output stride 8; heads are 1x1 convs: `seg_main` on layer8, `seg_aux` on the tap (layer6/7).
"""

import functools
from typing import Any, Callable, ClassVar, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from dakd_jax.models import layers

CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
BLOCKS = {
    'drn_d_22': (1, 1, 2, 2, 2, 2, 1, 1),
    'drn_d_38': (1, 1, 3, 4, 6, 3, 1, 1),
}
AUX_TAPS = ('layer6', 'layer7')
# layer1..layer8: (stride of the first conv/block, dilation). layer0 is a lone 7x7 conv.
_STAGES = ((1, 1), (2, 1), (2, 1), (2, 1), (1, 2), (1, 4), (1, 2), (1, 1))


class ConvStack(nn.Module):
  """`num_convs` x (conv + BN + ReLU); the first conv carries the stride (layers 0-2, 7, 8)."""
  features: int
  num_convs: int
  kernel_size: int = 3
  stride: int = 1
  dilation: int = 1
  dtype: Optional[Any] = None
  norm: Callable[..., nn.Module] = layers.BatchNorm

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.num_convs):
      x = layers.conv2d(
          self.features, self.kernel_size, stride=self.stride if i == 0 else 1,
          dilation=self.dilation, kernel_init=layers.drn_init(self.kernel_size, self.features),
          dtype=self.dtype, name=f'conv{i}')(x)
      x = nn.relu(self.norm(name=f'bn{i}')(x, train))
    return x


class BasicBlock(nn.Module):
  """Two 3x3 convs with BN, residual add, ReLU; a 1x1 conv + BN projection if `project`."""
  features: int
  stride: int = 1
  dilation: int = 1
  project: bool = False
  dtype: Optional[Any] = None
  norm: Callable[..., nn.Module] = layers.BatchNorm

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    bn = lambda name: self.norm(name=name)
    init = layers.drn_init(3, self.features)
    residual = x
    y = layers.conv2d(self.features, 3, stride=self.stride, dilation=self.dilation,
                      kernel_init=init, dtype=self.dtype, name='conv1')(x)
    y = nn.relu(bn('bn1')(y, train))
    y = layers.conv2d(self.features, 3, dilation=self.dilation, kernel_init=init,
                      dtype=self.dtype, name='conv2')(y)
    y = bn('bn2')(y, train)
    if self.project:
      residual = layers.conv2d(self.features, 1, stride=self.stride,
                               kernel_init=layers.drn_init(1, self.features),
                               dtype=self.dtype, name='downsample_conv')(x)
      residual = bn('downsample_bn')(residual, train)
    return nn.relu(y + residual)


class ResidualStack(nn.Module):
  """`num_blocks` BasicBlocks; the first carries the stride and, on a shape change, a projection.

  DRN-D uses `new_level=False` for layers 5/6, so every block (the first included) uses the
  full dilation. `remat` recomputes each block in the backward pass.
  """
  features: int
  num_blocks: int
  stride: int = 1
  dilation: int = 1
  dtype: Optional[Any] = None
  norm: Callable[..., nn.Module] = layers.BatchNorm
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    block = layers.maybe_remat(BasicBlock, self.remat)
    for j in range(self.num_blocks):
      first = j == 0
      x = block(
          self.features, stride=self.stride if first else 1, dilation=self.dilation,
          project=first and (self.stride != 1 or x.shape[-1] != self.features),
          dtype=self.dtype, norm=self.norm, name=f'block{j}')(x, train)
    return x


def seg_head(num_classes: int, dtype: Optional[Any] = None,
             name: Optional[str] = None) -> nn.Conv:
  """A 1x1 classifier conv with bias and DRN's init (DAKD's `seg1`/`seg2`)."""
  return layers.conv2d(num_classes, 1, use_bias=True,
                       kernel_init=layers.drn_init(1, num_classes), dtype=dtype, name=name)



class DRNSeg(nn.Module):
  """DRN-D segmentation network with an auxiliary (tap) head and a main (layer8) head.

  Attributes:
    arch: 'drn_d_22' | 'drn_d_38'.
    num_classes: output channels of both heads.
    width: multiplier of every channel count (1.0 = official; at least 1 channel per layer).
    aux_tap: 'layer6' | 'layer7', the layer the auxiliary head reads.
    dtype: compute dtype (parameters and BN statistics stay float32).
    freeze_bn_affine: BN scale/bias frozen: no gradient, and the optimiser leaves them out.
    bn_groups: BatchNorm statistics groups in training (per-device statistics; see
      `layers.BatchNorm`); a run-time choice that changes no variable.
    return_features: also return the tap ('aux_features') and layer8 ('main_features') maps.
    remat: recompute every residual block and conv stack in the backward pass instead of
      storing its activations (same variables and results, less memory).
  """
  HEAD_MODULES: ClassVar[tuple[str, ...]] = ('seg_main', 'seg_aux')

  arch: str = 'drn_d_22'
  num_classes: int = 19
  width: float = 1.0
  aux_tap: str = 'layer6'
  dtype: Any = jnp.float32
  freeze_bn_affine: bool = False
  bn_groups: int = 1
  return_features: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> Dict[str, jax.Array]:
    """Maps images [N, H, W, 3] to logits {'aux', 'main'} of shape [N, ceil(H/8), ceil(W/8), C].

    `train=True` normalises with batch statistics and updates `batch_stats` (make it mutable).
    Logits are in the compute dtype and not upsampled.
    """
    if self.arch not in BLOCKS:
      raise ValueError(f'DRNSeg: unknown arch {self.arch!r}; valid: {sorted(BLOCKS)}')
    if self.aux_tap not in AUX_TAPS:
      raise ValueError(f'DRNSeg: unknown aux_tap {self.aux_tap!r}; valid: {list(AUX_TAPS)}')
    common = dict(dtype=self.dtype, norm=functools.partial(
        layers.BatchNorm, freeze_affine=self.freeze_bn_affine, groups=self.bn_groups,
        dtype=self.dtype))
    blocks = BLOCKS[self.arch]
    conv_stack = layers.maybe_remat(ConvStack, self.remat)
    x = conv_stack(layers.scaled_channels(CHANNELS[0], self.width), 1, kernel_size=7,
                   name='layer0', **common)(images, train)
    taps = {}
    for i, (stride, dilation) in enumerate(_STAGES):
      features = layers.scaled_channels(CHANNELS[i], self.width)
      if 2 <= i <= 5:
        stack = functools.partial(ResidualStack, remat=self.remat)
      else:
        stack = conv_stack
      x = stack(features, blocks[i], stride=stride, dilation=dilation, name=f'layer{i + 1}',
                **common)(x, train)
      taps[f'layer{i + 1}'] = x
    aux_features = taps[self.aux_tap]
    out = {'aux': seg_head(self.num_classes, self.dtype, 'seg_aux')(aux_features),
           'main': seg_head(self.num_classes, self.dtype, 'seg_main')(x)}
    if self.return_features:
      out['aux_features'] = aux_features
      out['main_features'] = x
    return out
