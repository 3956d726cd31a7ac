"""PSPNet with SKD's deep-stem ("combine") ResNets: the R101 teacher and the R18 student.

Layout (SKD `networks/pspnet_combine.py`, method.md §5.1):
  stem: three 3x3 convs 3 -> 64 (stride 2) -> 64 -> 128, BN + ReLU after each, then the ceil-mode
  3x3/s2 max-pool; layer1..layer4 of torchvision-style blocks (the stride sits in the first 3x3
  conv), layer2 stride 2, layer3 dilation 2 and layer4 dilation 4 (both stride 1), a projection
  shortcut wherever the stride or the width changes (the R18 student's layer1 too: 128 -> 64).
  Output stride 8 (512x512 -> 65x65).
  PSP module on layer4: adaptive average pools (1, 2, 3, 6), each a 1x1 conv + ABN, upsampled
  (align corners) and concatenated before the layer4 map; a 3x3 bottleneck conv + ABN +
  Dropout2d(0.1); `head` 1x1 conv (bias) -> logits.
  DSN auxiliary head on layer3: 3x3 conv (bias) + ABN + Dropout2d(0.1) + 1x1 conv (bias).
SKD's InPlace-ABN-Sync layers are BatchNorm + LeakyReLU(0.01) in the PSP module and the DSN head;
the backbone's ABN layers have no activation (the blocks apply their own ReLU). Everything NHWC.
"""

import functools
from typing import Any, Callable, ClassVar, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dakd_jax.models import layers
from dakd_jax.models.deeplab import ResNetStage, max_pool_ceil

PSP_SIZES = (1, 2, 3, 6)
ABN_SLOPE = 0.01
# name -> (block, blocks per stage, PSP/DSN width at width 1).
ARCHS = {
    'pspnet_r101': ('bottleneck', (3, 4, 23, 3), 512),
    'pspnet_r18': ('basic', (2, 2, 2, 2), 128),
}
# Per stage: (planes, stride, dilation).
_STAGES = ((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4))
_EXPANSION = 4  # Output channels of a bottleneck per plane.



def adaptive_avg_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] weights of torch's `AdaptiveAvgPool` along one axis.

  Bin i averages the inputs floor(i * in / out) .. ceil((i + 1) * in / out) - 1 (bins overlap
  when `in_size` is not a multiple of `out_size`, as in torch).
  """
  matrix = np.zeros((out_size, in_size), np.float32)
  for i in range(out_size):
    start = (i * in_size) // out_size
    end = -((-(i + 1) * in_size) // out_size)
    matrix[i, start:end] = 1.0 / (end - start)
  return matrix


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
  """torch `AdaptiveAvgPool2d((size, size))` on [N, H, W, C] -> [N, size, size, C]."""
  rows = jnp.asarray(adaptive_avg_pool_matrix(x.shape[1], size), x.dtype)
  cols = jnp.asarray(adaptive_avg_pool_matrix(x.shape[2], size), x.dtype)
  return jnp.einsum('Ww,nhwc->nhWc', cols, jnp.einsum('Hh,nhwc->nHwc', rows, x))


class ResBlock(nn.Module):
  """A torchvision-style residual block; the stride sits in the (first) 3x3 conv.

  'basic': 3x3 (stride, dilation) + BN + ReLU, 3x3 (dilation) + BN.
  'bottleneck': 1x1 + BN + ReLU, 3x3 (stride, dilation) + BN + ReLU, 1x1 (x4) + BN.
  Then the (projected if `project`) residual is added and ReLU applied. The fields before `kind`
  are those `deeplab.ResNetStage` passes.
  """
  planes: int
  stride: int = 1
  dilation: int = 1
  project: bool = False
  dtype: Any = jnp.float32
  norm: Callable[..., nn.Module] = layers.BatchNorm
  kind: str = 'bottleneck'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(layers.conv2d, dtype=self.dtype)
    bn = lambda name, y: self.norm(name=name)(y, train)
    d = self.dilation
    if self.kind == 'basic':
      y = nn.relu(bn('bn1', conv(self.planes, 3, stride=self.stride, dilation=d, name='conv1')(x)))
      y = bn('bn2', conv(self.planes, 3, dilation=d, name='conv2')(y))
    else:
      y = nn.relu(bn('bn1', conv(self.planes, 1, name='conv1')(x)))
      y = nn.relu(bn('bn2', conv(self.planes, 3, stride=self.stride, dilation=d, name='conv2')(y)))
      y = bn('bn3', conv(self.planes * _EXPANSION, 1, name='conv3')(y))
    residual = x
    if self.project:
      residual = bn('downsample_bn', conv(y.shape[-1], 1, stride=self.stride,
                                          name='downsample_conv')(x))
    return nn.relu(y + residual)


class BasicBlock(ResBlock):
  """The ResNet-18 block (`ResBlock` of kind 'basic')."""
  kind: str = 'basic'


_BLOCKS = {'basic': BasicBlock, 'bottleneck': ResBlock}


class PSPModule(nn.Module):
  """Pyramid pooling on [N, h, w, C] -> the bottleneck features [N, h, w, `features`].

  Stage i: adaptive average pool to PSP_SIZES[i], 1x1 conv + ABN (LeakyReLU 0.01), align-corners
  upsampling back to h x w; the stages and the input are concatenated (in that order) and fused
  by a 3x3 conv + ABN + Dropout2d (whole channels dropped, in training only).
  """
  features: int
  dropout_rate: float = 0.1
  dtype: Any = jnp.float32
  norm: Callable[..., nn.Module] = layers.BatchNorm

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    h, w = x.shape[1:3]
    priors = []
    for i, size in enumerate(PSP_SIZES):
      y = layers.conv2d(self.features, 1, dtype=self.dtype, name=f'stage{i}_conv')(
          adaptive_avg_pool(x, size))
      y = nn.leaky_relu(self.norm(name=f'stage{i}_bn')(y, train), ABN_SLOPE)
      priors.append(layers.resize_align_corners(y, (h, w)))
    y = layers.conv2d(self.features, 3, dtype=self.dtype, name='bottleneck_conv')(
        jnp.concatenate(priors + [x], axis=-1))
    y = nn.leaky_relu(self.norm(name='bottleneck_bn')(y, train), ABN_SLOPE)
    return nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(y)


class PSPNet(nn.Module):
  """SKD's PSPNet: deep-stem ResNet-101 (teacher) or ResNet-18 (student), PSP and DSN heads.

  Attributes:
    arch: 'pspnet_r101' or 'pspnet_r18' (fixed by the registry name).
    num_classes: output channels of both heads.
    width: channel multiplier of every layer (1.0 = the published nets; small values for tests).
    dropout_rate: Dropout2d rate of the PSP bottleneck and the DSN head (training only; needs a
      'dropout' rng then).
    dtype: compute dtype (parameters and BN statistics stay float32).
    bn_groups: BatchNorm statistics groups in training (see `layers.BatchNorm`).
    return_features: also return the layer3 map ('aux_features', the DSN input) and the PSP
      bottleneck features ('main_features', SKD's pair-wise distillation input).
    remat: recompute every residual block in the backward pass.
  """
  HEAD_MODULES: ClassVar[tuple[str, ...]] = ('head', 'dsn_classifier')

  arch: str = 'pspnet_r18'
  num_classes: int = 19
  width: float = 1.0
  dropout_rate: float = 0.1
  dtype: Any = jnp.float32
  bn_groups: int = 1
  return_features: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> Dict[str, jax.Array]:
    """Maps images [N, H, W, 3] to logits {'main', 'aux'} [N, h, w, C] at output stride 8.

    h = ceil(p / 2) with p = ceil((ceil(H / 2) - 1) / 2) + 1 the pooled size (512 -> 65).
    `train=True` normalises with batch statistics (make `batch_stats` mutable) and drops
    channels (pass a 'dropout' rng).
    """
    kind, blocks, head_width = ARCHS[self.arch]
    norm = functools.partial(layers.BatchNorm, groups=self.bn_groups, dtype=self.dtype)
    conv = functools.partial(layers.conv2d, dtype=self.dtype)
    ch = lambda c: layers.scaled_channels(c, self.width)
    x = images
    for i, (features, stride) in enumerate(((64, 2), (64, 1), (128, 1))):
      x = conv(ch(features), 3, stride=stride, name=f'conv{i + 1}')(x)
      x = nn.relu(norm(name=f'bn{i + 1}')(x, train))
    x = max_pool_ceil(x)
    maps = []
    # The first block of every stage projects: the stride or the width changes in each (the R18
    # student's layer1 too: 128 -> 64).
    for s, ((planes, stride, dilation), count) in enumerate(zip(_STAGES, blocks)):
      x = ResNetStage(ch(planes), count, stride, dilation, self.dtype, norm, self.remat,
                      block=_BLOCKS[kind], name=f'layer{s + 1}')(x, train)
      maps.append(x)
    features = PSPModule(ch(head_width), self.dropout_rate, self.dtype, norm,
                         name='pspmodule')(maps[3], train)
    main = conv(self.num_classes, 1, use_bias=True, name='head')(features)
    dsn = conv(ch(head_width), 3, use_bias=True, name='dsn_conv')(maps[2])
    dsn = nn.leaky_relu(norm(name='dsn_bn')(dsn, train), ABN_SLOPE)
    dsn = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(dsn)
    out = {'main': main,
           'aux': conv(self.num_classes, 1, use_bias=True, name='dsn_classifier')(dsn)}
    if self.return_features:
      out['aux_features'] = maps[2]
      out['main_features'] = features
    return out
