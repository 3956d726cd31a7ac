"""SKD's holistic discriminator: spectral-norm convolutions with SAGAN self-attention.

Layout (SKD `networks/sagan_models.py` with `preprocess_GAN_mode=1`, `imsize_for_adv=65`,
method.md §5.1): BatchNorm on the C-channel score map (raw logits), four spectral-norm
4x4/s2/p1 convs (bias) to conv_dim x (1, 2, 4, 8) channels with LeakyReLU(0.1), self-attention
after the third and the fourth, a final 4x4 conv (bias, no padding, no spectral norm) to one
channel. A 65x65 map gives a 1x1 score; larger maps give a patch map of scores.

Spectral norm keeps its power-iteration vectors (torch's `weight_u`, `weight_v`) in the
non-trainable `spectral` collection: a training forward (`train=True`, `spectral` mutable) runs
one power iteration from the stored u and stores the new u, v (as `torch.nn.utils.spectral_norm`
does in training mode); an inference forward uses the stored vectors unchanged. The kernel is
divided by sigma = u . (W v), differentiable through W only.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dakd_jax.models import layers

SPECTRAL = 'spectral'
_EPS = 1e-12


def _normalize(x: jax.Array) -> jax.Array:
  """x / max(||x||, 1e-12), torch's `F.normalize`."""
  return x / jnp.maximum(jnp.linalg.norm(x), _EPS)


class SpectralConv(nn.Module):
  """A conv (bias, explicit symmetric padding) whose HWIO kernel is divided by its spectral norm.

  The norm is that of the kernel as torch's [O, I * kh * kw] matrix, so `v` has torch's layout.
  """
  features: int
  kernel_size: int = 4
  stride: int = 2
  padding: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    k, cin = self.kernel_size, x.shape[-1]
    kernel = self.param('kernel', layers.torch_default_init, (k, k, cin, self.features),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    matrix = jnp.transpose(kernel, (3, 2, 0, 1)).reshape(self.features, -1)
    random_unit = lambda n: _normalize(jax.random.normal(self.make_rng('params'), (n,)))
    u = self.variable(SPECTRAL, 'u', random_unit, self.features)
    v = self.variable(SPECTRAL, 'v', random_unit, matrix.shape[1])
    u_now, v_now = u.value, v.value
    if train and not self.is_initializing():
      w = jax.lax.stop_gradient(matrix)
      v_now = _normalize(w.T @ u_now)
      u_now = _normalize(w @ v_now)
      u.value, v.value = u_now, v_now
    sigma = jnp.dot(u_now, matrix @ v_now)
    pad = ((self.padding, self.padding),) * 2
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), (kernel / sigma).astype(self.dtype), (self.stride, self.stride),
        pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + bias.astype(self.dtype)


class SelfAttention(nn.Module):
  """SAGAN self-attention on [N, H, W, C]: x + gamma * attention-weighted values.

  Queries and keys are 1x1 convs to C // 8 channels, values a 1x1 conv to C; attention is the
  softmax over the H*W key positions of query . key; gamma is a learnable scalar starting at 0.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    conv = lambda f, name: layers.conv2d(f, 1, use_bias=True, dtype=self.dtype, name=name)
    query = conv(c // 8, 'query_conv')(x).reshape(n, h * w, -1)
    key = conv(c // 8, 'key_conv')(x).reshape(n, h * w, -1)
    value = conv(c, 'value_conv')(x).reshape(n, h * w, c)
    attention = jax.nn.softmax(jnp.einsum('nic,njc->nij', query, key), axis=-1)
    out = jnp.einsum('nij,njc->nic', attention, value).reshape(n, h, w, c)
    gamma = self.param('gamma', nn.initializers.zeros, (1,), jnp.float32)
    return x + gamma.astype(x.dtype) * out


class SKDDiscriminator(nn.Module):
  """[N, H, W, C] score maps -> [N, h, w, 1] critic scores (65x65 -> 1x1).

  Attributes:
    conv_dim: width of the first conv (64 in SKD).
    dtype: compute dtype (parameters, statistics and power-iteration vectors stay float32).
  """
  conv_dim: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """`train=True` uses batch statistics and one power iteration per spectral-norm conv (make
    `batch_stats` and `spectral` mutable)."""
    x = layers.BatchNorm(dtype=self.dtype, name='preprocess')(x, train)
    for i in range(4):
      x = SpectralConv(self.conv_dim * 2 ** i, dtype=self.dtype, name=f'l{i + 1}')(x, train)
      x = nn.leaky_relu(x, 0.1)
      if i >= 2:
        x = SelfAttention(self.dtype, name=f'attn{i - 1}')(x)
    return layers.conv2d(1, 4, padding=0, use_bias=True, dtype=self.dtype, name='last')(x)
