"""The losses of DiGA's translator stage (`train_domain_translator.py`, `util/loss.py`), pure
functions of NHWC arrays.

- LSGAN over a multi-scale discriminator's score maps: the discriminator minimises
  sum_s [mean((D_s(real) - 1)^2) + mean(D_s(fake)^2)], the generator sum_s mean((D_s(fake) - 1)^2)
  (each mean over every element of that scale's map).
- L1: the mean absolute difference over every element (`nn.L1Loss()`).
- Semantic edges (`seg_edge_loss`): kornia 0.5.8's `laplacian(labels, 5)` (5x5 kernel of ones with
  -24 at the centre, divided by the sum of its magnitudes 48; reflect padding) on the label map
  as floats, the ignore value 255 included; a pixel is an edge where |response| > 0.1. The loss is
  the L1 between the input and the translated image on the edge pixels (both multiplied by the
  mask, the mean over every element of [N, H, W, 3]). The official function also thresholds the
  Laplacian of the input image, which no loss uses: it is not computed here.
- Perceptual (`VGGLoss`): while the width exceeds 1024 both images are halved by 2x2 average
  pooling; then sum_i w_i L1(phi_i(x), stop_gradient(phi_i(y))) over the frozen VGG-19's five ReLU
  outputs with the weights (1/32, 1/16, 1/8, 1/4, 1).
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from dakd_jax import losses

EDGE_KERNEL_SIZE = 5
EDGE_THRESHOLD = 0.1
PERCEPTUAL_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
PERCEPTUAL_MAX_WIDTH = 1024
REAL, FAKE = 1.0, 0.0  # LSGAN targets.


def l1(x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean |x - y| over every element (float32 scalar)."""
  return jnp.mean(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)))


def _squared_distance(maps: Sequence[jax.Array], target: float) -> jax.Array:
  """Sum over scales of the LS-GAN loss `losses.adversarial_loss(..., 'lsgan')` (the mean squared
  distance of every element to `target`)."""
  return sum(losses.adversarial_loss(m, target, gan='lsgan') for m in maps)


def lsgan_discriminator_loss(real_scores: Sequence[jax.Array],
                             fake_scores: Sequence[jax.Array]) -> jax.Array:
  """sum over scales of mean((real - 1)^2) + mean(fake^2); maps of any shape, one per scale."""
  return _squared_distance(real_scores, REAL) + _squared_distance(fake_scores, FAKE)


def lsgan_generator_loss(fake_scores: Sequence[jax.Array]) -> jax.Array:
  """sum over scales of mean((fake - 1)^2): the generator's images scored as real."""
  return _squared_distance(fake_scores, REAL)


def laplacian(x: jax.Array, kernel_size: int = EDGE_KERNEL_SIZE) -> jax.Array:
  """kornia's normalised Laplacian of every channel of [N, H, W, C] (reflect padding), same shape.

  The kernel is ones with 1 - k^2 at the centre, divided by 2 (k^2 - 1) (the sum of magnitudes);
  H and W must exceed k // 2 for the reflection.
  """
  kernel = jnp.ones((kernel_size, kernel_size), jnp.float32)
  mid = kernel_size // 2
  kernel = kernel.at[mid, mid].set(1.0 - kernel_size ** 2) / (2.0 * (kernel_size ** 2 - 1))
  channels = x.shape[-1]
  padded = jnp.pad(x.astype(jnp.float32), ((0, 0), (mid, mid), (mid, mid), (0, 0)),
                   mode='reflect')
  depthwise = jnp.broadcast_to(kernel[:, :, None, None], (kernel_size, kernel_size, 1, channels))
  return jax.lax.conv_general_dilated(
      padded, depthwise, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=channels, precision=jax.lax.Precision.HIGHEST)


def semantic_edges(labels: jax.Array, threshold: float = EDGE_THRESHOLD) -> jax.Array:
  """[N, H, W] int labels (255 included as a value) -> [N, H, W] float32 mask of label edges."""
  response = laplacian(labels.astype(jnp.float32)[..., None])[..., 0]
  return (jnp.abs(response) > threshold).astype(jnp.float32)


def semantic_edge_loss(translated: jax.Array, source: jax.Array, labels: jax.Array) -> jax.Array:
  """L1 between `source` and `translated` [N, H, W, 3] on the label edges of `labels` [N, H, W]:
  mean over every element of |source * m - translated * m| (no gradient to the mask)."""
  mask = semantic_edges(labels)[..., None]
  return l1(source * mask, translated * mask)


def halve_while_wider(x: jax.Array, max_width: int = PERCEPTUAL_MAX_WIDTH) -> jax.Array:
  """2x2 / stride 2 average pooling of [N, H, W, C] until W <= `max_width` (floor sizes)."""
  while x.shape[2] > max_width:
    n, h, w, c = x.shape
    x = x[:, :h - h % 2, :w - w % 2].reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
  return x


def perceptual_loss(features: Callable[[jax.Array], Sequence[jax.Array]], x: jax.Array,
                    y: jax.Array, weights: Sequence[float] = PERCEPTUAL_WEIGHTS) -> jax.Array:
  """sum_i weights[i] * L1(features(x)[i], stop_gradient(features(y)[i])).

  Args:
    features: the frozen feature extractor, [N, H, W, 3] -> a sequence of maps (VGG-19's ReLUs).
    x: the generated images [N, H, W, 3] (the gradient flows through `features` into them).
    y: the images they should resemble, same shape (no gradient).
    weights: one per feature map.
  """
  x, y = halve_while_wider(x), halve_while_wider(y)
  fx, fy = features(x), jax.lax.stop_gradient(features(y))
  if len(fx) != len(weights):
    raise ValueError(f'perceptual_loss: {len(fx)} feature maps but {len(weights)} weights')
  return sum(w * l1(a, b) for w, a, b in zip(weights, fx, fy))
