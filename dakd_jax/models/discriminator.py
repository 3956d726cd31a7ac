"""FCDiscriminator (AdaptSegNet/ADVENT/DAKD): a fully convolutional patch discriminator."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dakd_jax.models import layers


class FCDiscriminator(nn.Module):
  """Five 4x4 / stride 2 / padding 1 convs with bias: C -> ndf -> 2ndf -> 4ndf -> 8ndf -> 1.

  LeakyReLU(0.2) after the first four, no normalisation, no sigmoid. Each conv maps a side S to
  floor(S / 2), so [N, H, W, C] -> [N, floor(H / 32), floor(W / 32), 1] logits
  (720x1280 -> 22x40, 512x1024 -> 16x32). Variables hold only `params`.

  Attributes:
    ndf: width of the first conv (64 in every original).
    dtype: compute dtype (parameters stay float32).
  """
  ndf: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """`train` is accepted for a uniform model interface and ignored (no BatchNorm)."""
    del train
    conv = lambda features, name: layers.conv2d(
        features, 4, stride=2, padding=1, use_bias=True, dtype=self.dtype, name=name)
    for i, mult in enumerate((1, 2, 4, 8)):
      x = nn.leaky_relu(conv(self.ndf * mult, f'conv{i + 1}')(x), negative_slope=0.2)
    return conv(1, 'classifier')(x)
