"""DiGA's translator discriminator (`model_noaux.Discriminator` of the official repository): a
multi-scale LSGAN patch discriminator on images, MUNIT's design.

At each of `num_scales` scales (3) its own patch network sees the image; between scales the
image is average-pooled (3x3, stride 2, padding 1, padded pixels left out of each mean:
`AvgPool2d(3, 2, 1, count_include_pad=False)`, side S -> floor((S - 1) / 2) + 1). A patch network
is `num_layers` (4) zero-padded 4x4 / stride 2 / padding 1 convs without bias, each followed by
LeakyReLU(0.2) and no normalisation, width -> 2 width -> 4 width -> 8 width, then a 1x1 conv with
bias to one channel (raw LSGAN scores, no sigmoid). Each strided conv maps an even side S to S / 2.
At the official width 64: 2,756,097 parameters per scale, 8,268,291 in all.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dakd_jax.models import layers


def average_pool_3x3(x: jax.Array) -> jax.Array:
  """torch `AvgPool2d(3, stride=2, padding=1, count_include_pad=False)` on [N, H, W, C]."""
  window, strides = (1, 3, 3, 1), (1, 2, 2, 1)
  padding = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding)
  count = jax.lax.reduce_window(jnp.ones(x.shape[1:3], x.dtype)[None, :, :, None], 0.0,
                                jax.lax.add, window, strides, padding)
  return total / count


class PatchNetwork(nn.Module):
  """One scale: [N, H, W, C] -> [N, H / 2^num_layers, W / 2^num_layers, 1] scores."""
  width: int = 64
  num_layers: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.num_layers):
      x = layers.conv2d(self.width * 2 ** i, 4, stride=2, padding=1, use_bias=False,
                        dtype=self.dtype, name=f'conv{i}')(x)
      x = nn.leaky_relu(x, negative_slope=0.2)
    return layers.conv2d(1, 1, padding=0, use_bias=True, dtype=self.dtype, name='score')(x)


class MultiScaleImageDiscriminator(nn.Module):
  """Images [N, H, W, 3] -> a tuple of `num_scales` score maps [N, h_s, w_s, 1], finest first.

  Attributes:
    width: channels of each patch network's first conv (official `dim` 64).
    num_layers: strided convs per scale (official `n_layer` 4).
    num_scales: scales (official 3).
    dtype: compute dtype (parameters stay float32).
  """
  width: int = 64
  num_layers: int = 4
  num_scales: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    """`train` is accepted for a uniform model interface and ignored (no running statistics)."""
    del train
    scores, x = [], images
    for scale in range(self.num_scales):
      scores.append(PatchNetwork(self.width, self.num_layers, self.dtype,
                                 name=f'scale{scale}')(x))
      x = average_pool_3x3(x)
    return tuple(scores)
