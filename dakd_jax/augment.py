"""On-device image augmentation and class mixing for DiGA, as pure functions of a PRNG key.

Everything is NHWC float32; random parameters are drawn per image by `draw_strong_params` and
applied by `apply_strong_augment`, so the arithmetic can be checked against a reference with
fixed draws.

Strong augmentation (DiGA's `extra_aug`, kornia 0.5.8, method.md §6.2), each op applied to an image
with its probability: ColorJitter(brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, p 0.5),
RandomGrayscale(p 0.3), GaussianBlur(3x3, sigma 2, p 0.8), RandomSharpness(0.5, p 0.3); the result
x_aug is blended as `beta * (x_aug - 0.5) / 0.5 + (1 - beta) * x` (beta 0.4). As in the official
code the ops treat the network input (already normalised) as an image in [0, 1]; the colour ops
and sharpness clip their results to [0, 1], as kornia's do. Where kornia's exact op is not
reproduced it is said: the colour-jitter sub-ops run in the fixed order brightness, contrast, saturation, hue (kornia draws a random
order); brightness is kornia's additive shift, contrast its multiplicative scaling, saturation
the torchvision blend with the grey image, hue a rotation in YIQ space (kornia rotates H in HSV).

Class mixing (CrDoMix in the warm-up, ClassMix/DACS in self-training): half of the label values
present in an image (255 counted as a value, as `torch.unique` does) are drawn at random, 255 is
always added, and the mask is 1 on those pixels.
"""

from typing import Mapping

import jax
import jax.numpy as jnp

IGNORE_LABEL = 255
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
# Probability of each op and the ranges of its factors (official settings).
PROBS = {'jitter': 0.5, 'gray': 0.3, 'blur': 0.8, 'sharpness': 0.3}
JITTER = {'brightness': 0.4, 'contrast': 0.4, 'saturation': 0.2, 'hue': 0.1}
SHARPNESS = 0.5
BLUR_SIGMA = 2.0


def draw_strong_params(key: jax.Array, n: int,
                       probs: Mapping[str, float] | None = None) -> dict[str, jax.Array]:
  """Per-image random parameters of the strong augmentation: each entry is [n].

  `apply_*` flags are booleans, drawn with the probabilities `probs` (keys of `PROBS`; missing
  ones and None: `PROBS`, e.g. DiGA's SYNTHIA warm-up's `{'jitter': 0.7, 'gray': 0.1}`); factors
  are brightness in [-0.4, 0.4] (additive), contrast and saturation in [1 - r, 1 + r], hue in
  [-0.1, 0.1] (turns), sharpness in [0, 0.5].
  """
  probs = {**PROBS, **(probs or {})}
  keys = jax.random.split(key, 8)
  flag = lambda k, p: jax.random.uniform(k, (n,)) < p
  uniform = lambda k, lo, hi: jax.random.uniform(k, (n,), minval=lo, maxval=hi)
  b, c, s, h = (JITTER[k] for k in ('brightness', 'contrast', 'saturation', 'hue'))
  return {
      'jitter': flag(keys[0], probs['jitter']), 'gray': flag(keys[1], probs['gray']),
      'blur': flag(keys[2], probs['blur']), 'sharpness': flag(keys[3], probs['sharpness']),
      'brightness': uniform(keys[4], -b, b), 'contrast': uniform(keys[5], 1 - c, 1 + c),
      'saturation': uniform(keys[6], 1 - s, 1 + s),
      'hue': uniform(jax.random.fold_in(keys[7], 0), -h, h),
      'sharpness_factor': uniform(jax.random.fold_in(keys[7], 1), 0.0, SHARPNESS)}


def _gray(x: jax.Array) -> jax.Array:
  """[H, W, 3] -> [H, W, 1] luminance."""
  return jnp.sum(x * jnp.asarray(GRAY_WEIGHTS, x.dtype), axis=-1, keepdims=True)


def _rotate_hue(x: jax.Array, turns: jax.Array) -> jax.Array:
  """Rotates the chroma of [H, W, 3] by `turns` of a full circle in YIQ space."""
  to_yiq = jnp.asarray([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]], x.dtype)
  angle = 2 * jnp.pi * turns
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  rotation = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], x.dtype)
  rotation = rotation.at[1, 1].set(cos).at[1, 2].set(-sin).at[2, 1].set(sin).at[2, 2].set(cos)
  matrix = jnp.linalg.inv(to_yiq) @ rotation @ to_yiq
  return x @ matrix.T


def _filter3x3(x: jax.Array, kernel: jax.Array, mode: str) -> jax.Array:
  """Depthwise 3x3 filter of [H, W, C] with `mode` padding ('reflect' or 'edge')."""
  padded = jnp.pad(x, ((1, 1), (1, 1), (0, 0)), mode=mode)
  h, w = x.shape[:2]
  return sum(kernel[i, j] * padded[i:i + h, j:j + w] for i in range(3) for j in range(3))


def _blur(x: jax.Array) -> jax.Array:
  """3x3 Gaussian blur, sigma 2, reflect border (kornia's GaussianBlur2d default)."""
  taps = jnp.exp(-jnp.arange(-1.0, 2.0) ** 2 / (2 * BLUR_SIGMA ** 2))
  taps = taps / jnp.sum(taps)
  return _filter3x3(x, jnp.outer(taps, taps), 'reflect')


def _sharpen(x: jax.Array, factor: jax.Array) -> jax.Array:
  """Blend with the [[1,1,1],[1,5,1],[1,1,1]]/13 smoothed image (borders unsmoothed)."""
  kernel = jnp.ones((3, 3), x.dtype).at[1, 1].set(5.0) / 13.0
  smooth = _filter3x3(x, kernel, 'edge')
  h, w = x.shape[:2]
  interior = jnp.zeros((h, w, 1), bool).at[1:-1, 1:-1].set(True)
  degenerate = jnp.where(interior, smooth, x)
  return jnp.clip(degenerate + factor * (x - degenerate), 0.0, 1.0)


def _augment_one(x: jax.Array, p: Mapping[str, jax.Array]) -> jax.Array:
  """The strong augmentation of one [H, W, 3] image with its drawn parameters."""
  jittered = jnp.clip(x + p['brightness'], 0.0, 1.0)
  jittered = jnp.clip(jittered * p['contrast'], 0.0, 1.0)
  gray = _gray(jittered)
  jittered = jnp.clip(gray + p['saturation'] * (jittered - gray), 0.0, 1.0)
  jittered = jnp.clip(_rotate_hue(jittered, p['hue']), 0.0, 1.0)
  x = jnp.where(p['jitter'], jittered, x)
  x = jnp.where(p['gray'], jnp.broadcast_to(_gray(x), x.shape), x)
  x = jnp.where(p['blur'], _blur(x), x)
  return jnp.where(p['sharpness'], _sharpen(x, p['sharpness_factor']), x)


def apply_strong_augment(images: jax.Array, params: Mapping[str, jax.Array],
                         beta: float = 0.4) -> jax.Array:
  """DiGA's strongly augmented view of `images` [N, H, W, 3] (see the module docstring)."""
  x = images.astype(jnp.float32)
  augmented = jax.vmap(_augment_one)(x, dict(params))
  return beta * (augmented - 0.5) / 0.5 + (1.0 - beta) * x


def strong_augment(key: jax.Array, images: jax.Array, beta: float = 0.4,
                   probs: Mapping[str, float] | None = None) -> jax.Array:
  """`apply_strong_augment` with parameters drawn from `key` (op probabilities `probs`)."""
  return apply_strong_augment(images, draw_strong_params(key, images.shape[0], probs), beta)


def colour_statistics_transfer(source: jax.Array, target: jax.Array) -> jax.Array:
  """Per-image, per-channel mean/std of `target` imposed on `source` (both [N, H, W, 3]).

  A cheap stand-in for DiGA's learned source-to-target translator (a deviation, named so in the
  method's options): image i of the source takes the colour statistics of target image i.
  """
  axes = (1, 2)
  s_mean, t_mean = jnp.mean(source, axes, keepdims=True), jnp.mean(target, axes, keepdims=True)
  s_std, t_std = jnp.std(source, axes, keepdims=True), jnp.std(target, axes, keepdims=True)
  return (source - s_mean) / (s_std + 1e-5) * t_std + t_mean


def _slots(labels: jax.Array, num_classes: int) -> jax.Array:
  """Label values as slots 0..C-1, with 255 (and anything outside [0, C)) in slot C."""
  inside = (labels >= 0) & (labels < num_classes)
  return jnp.where(inside, labels, num_classes).astype(jnp.int32)


def choose_half_of_classes(key: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """Per image, floor(K / 2) of its K present label values drawn at random, plus 255.

  Args:
    key: PRNG key.
    labels: [N, H, W] train ids (255 = ignore).
    num_classes: C.

  Returns:
    [N, C + 1] bool: slot c < C chooses class c, slot C (255) is always chosen.
  """
  slots = _slots(labels, num_classes)
  present = jnp.any(jax.nn.one_hot(slots, num_classes + 1, dtype=jnp.bool_), axis=(1, 2))
  draws = jax.random.uniform(key, present.shape)
  return chosen_from_draws(present, draws)


def chosen_from_draws(present: jax.Array, draws: jax.Array) -> jax.Array:
  """The floor(K / 2) present slots with the smallest draws, plus the ignore slot (the last)."""
  scores = jnp.where(present, draws, jnp.inf)
  rank = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
  keep = jnp.sum(present, axis=-1, keepdims=True) // 2
  return (present & (rank < keep)).at[:, -1].set(True)


def class_mask(labels: jax.Array, chosen: jax.Array) -> jax.Array:
  """[N, H, W] float32: 1 where the pixel's label value is chosen ([N, C + 1] from above)."""
  slots = _slots(labels, chosen.shape[-1] - 1)
  return jnp.take_along_axis(chosen, slots.reshape(slots.shape[0], -1), axis=1).reshape(
      labels.shape).astype(jnp.float32)


def mix(mask: jax.Array, inside: jax.Array, outside: jax.Array) -> jax.Array:
  """`inside` where mask is 1, `outside` elsewhere; mask [N, H, W], images [N, H, W, C]."""
  m = mask[..., None].astype(inside.dtype)
  return inside * m + outside * (1 - m)
