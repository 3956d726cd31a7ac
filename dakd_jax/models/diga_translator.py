"""DiGA's source-to-target image translator (method.md §6.1), MUNIT-like, used by CrDoMix.

Every conv block is reflect padding -> conv (with bias) -> InstanceNorm (no affine parameters,
eps 1e-5, biased variance over H, W per image and channel) -> activation.

- encoder (5,385,856 params): 7x7 conv 3 -> 64 + IN + ReLU; two 4x4 / stride 2 convs
  (64 -> 128 -> 256) + IN + ReLU; four residual blocks (two 3x3 convs + IN, ReLU after the
  first, identity shortcut). [N, H, W, 3] -> [N, H / 4, W / 4, 256].
- decoder (5,754,243 params): four residual blocks; twice (nearest x2 upsampling, 5x5 conv
  + IN + ReLU) 256 -> 128 -> 64; 7x7 conv 64 -> 3 + tanh. [N, h, w, 256] -> [N, 4h, 4w, 3].
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dakd_jax.models import layers

NUM_RES = 4


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """torch `InstanceNorm2d` without affine parameters on [N, H, W, C] (statistics in float32)."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class ConvBlock(nn.Module):
  """Reflect pad -> conv (bias) -> optional InstanceNorm -> activation, on [N, H, W, C]."""
  features: int
  kernel_size: int
  stride: int = 1
  norm: bool = True
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.kernel_size // 2 if self.kernel_size % 2 else (self.kernel_size - 2) // 2
    x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')
    x = layers.conv2d(self.features, self.kernel_size, stride=self.stride, padding=0,
                      use_bias=True, dtype=self.dtype, name='conv')(x)
    return self.activation(instance_norm(x) if self.norm else x)


def _residual_blocks(x: jax.Array, dtype: Any) -> jax.Array:
  """`NUM_RES` blocks x + IN(conv(relu(IN(conv(x))))), modules `res{i}_conv{0,1}` of the caller."""
  for i in range(NUM_RES):
    y = ConvBlock(x.shape[-1], 3, dtype=dtype, name=f'res{i}_conv0')(x)
    x = x + ConvBlock(x.shape[-1], 3, activation=lambda v: v, dtype=dtype,
                      name=f'res{i}_conv1')(y)
  return x


class TranslatorEncoder(nn.Module):
  """[N, H, W, 3] -> [N, H / 4, W / 4, 256] content features."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = ConvBlock(64, 7, dtype=self.dtype, name='stem')(x)
    x = ConvBlock(128, 4, stride=2, dtype=self.dtype, name='down0')(x)
    x = ConvBlock(256, 4, stride=2, dtype=self.dtype, name='down1')(x)
    return _residual_blocks(x, self.dtype)


class TranslatorDecoder(nn.Module):
  """[N, h, w, 256] -> [N, 4h, 4w, 3] image in [-1, 1]."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = _residual_blocks(x, self.dtype)
    for i, features in enumerate((128, 64)):
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # Nearest x2 (nn.Upsample default).
      x = ConvBlock(features, 5, dtype=self.dtype, name=f'up{i}')(x)
    return ConvBlock(3, 7, norm=False, activation=jnp.tanh, dtype=self.dtype, name='out')(x)


class DiGATranslator(nn.Module):
  """Encoder + decoder: source images [N, H, W, 3] -> target-styled images (H, W multiples of 4).

  Attributes:
    dtype: compute dtype (parameters stay float32).
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    """`train` is accepted for a uniform model interface and ignored (no running statistics)."""
    del train
    features = TranslatorEncoder(self.dtype, name='encoder')(images)
    return TranslatorDecoder(self.dtype, name='decoder')(features)
