"""Layers shared by the models: align-corners resize, torch-exact BatchNorm, conv factory.

Everything is NHWC. Parameters are float32; `dtype` is the compute dtype.
"""

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
Initializer = Callable[..., jax.Array]


def _align_corners_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] bilinear weights of PyTorch's `align_corners=True` sampling.

  Output pixel i samples input position i * (in - 1) / (out - 1) (position 0 when out == 1, as
  torch does); each row holds the two linear weights of its neighbouring input pixels. The
  positions are computed in float32 like torch's CPU/GPU kernels, so large ratios (65 -> 512)
  agree with `F.interpolate` to float32 rounding rather than to ~1e-5.
  """
  scale = np.float32((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
  src = np.arange(out_size, dtype=np.float32) * scale
  lo = np.minimum(src.astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = np.clip(src - lo.astype(np.float32), 0.0, 1.0)
  matrix = np.zeros((out_size, in_size), np.float32)
  rows = np.arange(out_size)
  np.add.at(matrix, (rows, lo), 1.0 - frac)
  np.add.at(matrix, (rows, hi), frac)
  return matrix


def _traced_align_corners_matrix(in_size, out_size, dtype) -> jax.Array:
  """`_align_corners_matrix` built on device, for symbolic sizes (`jax.export` shape polymorphism).

  The same float32 arithmetic as the NumPy version (positions `i * scale` truncated, clipped
  neighbours, linear weights); `scale` is a float32 division (torch's own), which can differ from
  the NumPy version's rounded float64 quotient by one float32 ulp.
  """
  in_f, out_f = (jnp.asarray(s, jnp.float32) for s in (in_size, out_size))
  scale = jnp.where(out_f > 1, (in_f - 1) / jnp.maximum(out_f - 1, 1), 0.0)
  src = jnp.arange(out_size, dtype=jnp.float32) * scale
  lo = jnp.minimum(src.astype(jnp.int32), in_size - 1)
  hi = jnp.minimum(lo + 1, in_size - 1)
  frac = jnp.clip(src - lo.astype(jnp.float32), 0.0, 1.0)[:, None]
  columns = jnp.arange(in_size, dtype=jnp.int32)[None, :]
  matrix = (jnp.where(columns == lo[:, None], 1.0 - frac, 0.0)
            + jnp.where(columns == hi[:, None], frac, 0.0))
  return matrix.astype(dtype)


def resize_align_corners(x: jax.Array, size: Sequence[Any]) -> jax.Array:
  """Bilinear resize with PyTorch `align_corners=True` semantics, any ratio (up or down).

  Implemented as two small dense interpolation matrices (one per spatial axis) contracted with
  einsum: matmuls are fast on accelerators, exactly differentiable, and unlike a gather they need
  no index arithmetic on device. `jax.image.resize` is half-pixel and must not be used here.
  Concrete sizes build the matrices in NumPy (constants of the program); symbolic sizes
  (`jax.export` with symbolic H, W) build them on device.

  Args:
    x: [N, h, w, C] array (any float dtype; the result keeps it).
    size: (H, W) output size.

  Returns:
    [N, H, W, C] array.
  """
  if x.ndim != 4:
    raise ValueError(f'resize_align_corners expects [N, h, w, C], got shape {x.shape}')
  out_h, out_w = size
  _, in_h, in_w, _ = x.shape
  sizes = (in_h, out_h, in_w, out_w)
  if any(jax.export.is_symbolic_dim(s) for s in sizes):
    rows = _traced_align_corners_matrix(in_h, out_h, x.dtype)
    cols = _traced_align_corners_matrix(in_w, out_w, x.dtype)
  else:
    out_h, out_w = int(out_h), int(out_w)
    if out_h < 1 or out_w < 1:
      raise ValueError(f'resize_align_corners: output size must be positive, got {size}')
    rows = jnp.asarray(_align_corners_matrix(in_h, out_h), x.dtype)
    cols = jnp.asarray(_align_corners_matrix(in_w, out_w), x.dtype)
  x = jnp.einsum('Hh,nhwc->nHwc', rows, x)
  return jnp.einsum('Ww,nhwc->nhWc', cols, x)


def maybe_remat(block: type[nn.Module], remat: bool) -> type[nn.Module]:
  """`block` (whose call is `(x, train)`), rematerialised if `remat`: its activations are
  recomputed in the backward pass instead of stored. Variables and outputs are unchanged."""
  return nn.remat(block, static_argnums=(2,)) if remat else block


class BatchNorm(nn.Module):
  """BatchNorm over [N, H, W, C] with exactly PyTorch's `BatchNorm2d` arithmetic.

  Variables: params `scale`, `bias` (torch `weight`, `bias`); batch_stats `mean`, `var` (torch
  `running_mean`, `running_var`). In training mode the output is normalised with the biased batch
  variance while `var` is updated with the unbiased one, `running = (1 - momentum) * running +
  momentum * batch` (torch's momentum convention). Statistics are computed in float32 whatever
  the compute dtype. Under `jax.jit` with the batch sharded over a mesh, the mean over axis 0 is a
  global reduction, so the statistics cover the global batch (synchronised BN) with no extra code.
  With `groups > 1` the batch is split into `groups` consecutive sub-batches, each normalised with
  its own statistics: with `groups` = the mesh size these are per-device statistics, as one
  PyTorch process per GPU computes them; the running statistics then move towards the mean over
  groups of the group mean and of the unbiased group variance.

  Attributes:
    momentum: torch-style momentum of the running statistics.
    epsilon: added to the variance.
    freeze_affine: stop gradients to `scale`/`bias` (AdaptSegNet keeps BN in train mode with frozen
      affine parameters; the optimiser leaves them out too).
    groups: sub-batches with their own statistics in training mode (must divide N).
    dtype: output dtype (None: the input's).
  """
  momentum: float = 0.1
  epsilon: float = 1e-5
  freeze_affine: bool = False
  groups: int = 1
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    if self.freeze_affine:
      scale, bias = jax.lax.stop_gradient(scale), jax.lax.stop_gradient(bias)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    x32 = x.astype(jnp.float32)
    if train:
      if x.shape[0] % self.groups:
        raise ValueError(f'BatchNorm: batch of {x.shape[0]} is not divisible into '
                         f'{self.groups} statistics groups')
      # [groups, N / groups, H, W, C]; without groups the plain batch axes (same reduction).
      grouped = x32.reshape(self.groups, -1, *x.shape[1:]) if self.groups > 1 else x32
      axes = (1, 2, 3) if self.groups > 1 else (0, 1, 2)
      mean = jnp.mean(grouped, axis=axes, keepdims=self.groups > 1)
      # Two-pass variance: more accurate than E[x^2] - E[x]^2 on large activations.
      var = jnp.mean(jnp.square(grouped - mean), axis=axes, keepdims=self.groups > 1)
      if not self.is_initializing():
        count = x.size // x.shape[-1] // self.groups
        batch_mean, batch_var = mean, var * (count / max(count - 1, 1))  # unbiased variance
        if self.groups > 1:  # The running statistics follow the groups' average.
          batch_mean, batch_var = (jnp.mean(v, axis=(0, 1, 2, 3))
                                   for v in (batch_mean, batch_var))
        ra_mean.value = (1.0 - self.momentum) * ra_mean.value + self.momentum * batch_mean
        ra_var.value = (1.0 - self.momentum) * ra_var.value + self.momentum * batch_var
      y = (grouped - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
      y = y.reshape(x.shape)
    else:
      y = (x32 - ra_mean.value) * (jax.lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
    return y.astype(self.dtype or x.dtype)


def scaled_channels(channels: int, width: float) -> int:
  """`channels` times the width multiplier `width`, rounded, at least 1 (narrow test networks)."""
  return max(1, int(round(channels * width)))


def normal_init(stddev: float) -> Initializer:
  """N(0, stddev^2) kernel init (DeepLab: 0.01)."""
  return nn.initializers.normal(stddev)


def drn_init(kernel_size: int, features: int) -> Initializer:
  """DRN's conv init N(0, 2 / (k * k * C_out))."""
  return nn.initializers.normal(float(np.sqrt(2.0 / (kernel_size * kernel_size * features))))


# PyTorch's default conv init, kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def conv2d(features: int,
           kernel_size: int,
           *,
           stride: int = 1,
           dilation: int = 1,
           padding: Optional[int] = None,
           use_bias: bool = False,
           kernel_init: Initializer = torch_default_init,
           dtype: Optional[Dtype] = None,
           name: Optional[str] = None) -> nn.Conv:
  """A square conv with PyTorch's explicit symmetric padding ((p, p), (p, p)).

  'SAME' would pad asymmetrically for strided convs, shifting every feature map by half a pixel
  relative to the PyTorch models. `padding` defaults to `dilation * (kernel_size - 1) // 2`
  (torch's `padding=dilation` for dilated 3x3 convs). Kernel layout HWIO, params float32.
  """
  if padding is None:
    padding = dilation * (kernel_size - 1) // 2
  return nn.Conv(
      features,
      (kernel_size, kernel_size),
      strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      kernel_dilation=(dilation, dilation),
      use_bias=use_bias,
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=kernel_init,
      bias_init=nn.initializers.zeros,
      name=name)
