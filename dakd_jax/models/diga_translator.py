"""DiGA's source-to-target image translator (method.md §6.1), MUNIT-like, used by CrDoMix.

`diga_translator` is the released pair (`enc_s` + `dec_s2t`); `diga_cycle_translator` holds the
four halves its training stage trains (`train_domain_translator.py`): both encoders, both
decoders, with the same `encoder` / `decoder` for the source-to-target direction.

Every conv block is reflect padding -> conv (with bias) -> InstanceNorm (no affine parameters,
eps 1e-5, biased variance over H, W per image and channel) -> activation. Channels below are at
the official `width` 64 (the `width` option scales every one of them; the tiny configs use 8).

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
  """[N, H, W, 3] -> [N, H / 4, W / 4, 4 width] content features (official `dim` = width 64)."""
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = ConvBlock(self.width, 7, dtype=self.dtype, name='stem')(x)
    x = ConvBlock(2 * self.width, 4, stride=2, dtype=self.dtype, name='down0')(x)
    x = ConvBlock(4 * self.width, 4, stride=2, dtype=self.dtype, name='down1')(x)
    return _residual_blocks(x, self.dtype)


class TranslatorDecoder(nn.Module):
  """[N, h, w, 4 width] -> [N, 4h, 4w, 3] image in [-1, 1]."""
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = _residual_blocks(x, self.dtype)
    for i, features in enumerate((2 * self.width, self.width)):
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # Nearest x2 (nn.Upsample default).
      x = ConvBlock(features, 5, dtype=self.dtype, name=f'up{i}')(x)
    return ConvBlock(3, 7, norm=False, activation=jnp.tanh, dtype=self.dtype, name='out')(x)


class DiGATranslator(nn.Module):
  """Encoder + decoder: source images [N, H, W, 3] -> target-styled images (H, W multiples of 4).

  Attributes:
    width: channels of the first conv (official 64; the encoder ends at 4 width).
    dtype: compute dtype (parameters stay float32).
  """
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    """`train` is accepted for a uniform model interface and ignored (no running statistics)."""
    del train
    features = TranslatorEncoder(self.width, self.dtype, name='encoder')(images)
    return TranslatorDecoder(self.width, self.dtype, name='decoder')(features)


class DiGACycleTranslator(nn.Module):
  """The translator stage's four halves: `encoder` (enc_s), `decoder` (dec_s2t),
  `target_encoder` (enc_t), `source_decoder` (dec_t2s).

  Called like `DiGATranslator` (source -> target-styled images, from `encoder` and `decoder`, so
  a frozen translator role accepts it as is); `cycle` is the training forward.

  Attributes:
    width: channels of the first conv of each encoder (official 64).
    dtype: compute dtype (parameters stay float32).
  """
  width: int = 64
  dtype: Any = jnp.float32

  def setup(self):
    self.encoder = TranslatorEncoder(self.width, self.dtype)
    self.decoder = TranslatorDecoder(self.width, self.dtype)
    self.target_encoder = TranslatorEncoder(self.width, self.dtype)
    self.source_decoder = TranslatorDecoder(self.width, self.dtype)

  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    """Source images [N, H, W, 3] -> target-styled [N, H, W, 3]; `train` is ignored."""
    del train
    if self.is_initializing():  # Every half gets its variables, not only the ones used here.
      self.source_decoder(self.target_encoder(images))
    return self.decoder(self.encoder(images))

  def cycle(self, source: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
    """Every image the official losses compare, as `train_domain_translator.py` computes them.

    Args:
      source, target: [N, H, W, 3] images of each domain (H, W multiples of 4; the two batches
        may differ in size).

    Returns:
      `'s2t'` dec_s2t(enc_s(x_s)), `'t2s'` dec_t2s(enc_t(x_t)); the self-reconstructions through
      the other domain's decoder, `'source_self'` dec_t2s(enc_s(x_s)) and `'target_self'`
      dec_s2t(enc_t(x_t)); the cycles `'source_cycle'` dec_t2s(enc_t(s2t)) and
      `'target_cycle'` dec_s2t(enc_s(t2s)). Each has its input's shape.
    """
    source_features, target_features = self.encoder(source), self.target_encoder(target)
    s2t, t2s = self.decoder(source_features), self.source_decoder(target_features)
    return {'s2t': s2t, 't2s': t2s,
            'source_self': self.source_decoder(source_features),
            'target_self': self.decoder(target_features),
            'source_cycle': self.source_decoder(self.target_encoder(s2t)),
            'target_cycle': self.decoder(self.encoder(t2s))}
