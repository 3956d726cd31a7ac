"""Every loss of the method, as pure functions of NHWC arrays.

Conventions: ``logits`` are raw class scores ``[N, H, W, C]``; every function casts its floating
inputs to float32 before computing (bf16 activations are common on accelerators, and softmax /
log reductions in bf16 lose too much precision) and returns a float32 scalar unless stated
otherwise. Teachers are wrapped in ``jax.lax.stop_gradient``. Where the released DAKD code differs
from the paper, both behaviours are available (see docs and ``spec/decisions.md``).
"""

import jax
import jax.numpy as jnp

IGNORE_LABEL = 255
KL_MODES = ('paper', 'legacy_zero', 'modern_surrogate')
GAN_MODES = ('bce', 'lsgan')
# ADVENT adds this inside log2 so that p = 0 gives 0 * finite instead of 0 * -inf.
_ENTROPY_EPS = 1e-30


def _f32(x: jax.Array) -> jax.Array:
  return jnp.asarray(x).astype(jnp.float32)


def _check_same_shape(fn: str, a: jax.Array, b: jax.Array) -> None:
  if a.shape != b.shape:
    raise ValueError(f'{fn}: student shape {a.shape} != teacher shape {b.shape}; expected equal '
                     'NHWC shapes (resize the teacher first).')


def _safe_divide(num: jax.Array, den: jax.Array) -> jax.Array:
  """num / den, or exactly 0 (with zero gradient) where den == 0."""
  nonzero = den > 0
  return jnp.where(nonzero, num / jnp.where(nonzero, den, 1.0), 0.0)


def segmentation_cross_entropy(logits: jax.Array,
                               labels: jax.Array,
                               ignore_label: int = IGNORE_LABEL,
                               average: str = 'valid') -> jax.Array:
  """Pixel cross-entropy averaged over valid pixels (the official ``CrossEntropy2d``).

  Args:
    logits: ``[N, H, W, C]`` class scores (log-probabilities work too: log_softmax is idempotent).
    labels: ``[N, H, W]`` integer train ids. Pixels equal to ``ignore_label`` or outside
      ``[0, C)`` are ignored.
    ignore_label: label value to ignore.
    average: 'valid' divides the summed loss by the valid pixels; 'all' by every pixel with a
      label >= 0, ignored ones included (DiGA's ``cross_entropy2d``).

  Returns:
    Float32 scalar: mean over valid pixels; exactly 0 with zero gradient when no pixel is valid
    (an all-ignore crop must not turn the step into NaN).
  """
  if average not in ('valid', 'all'):
    raise ValueError(
        f"segmentation_cross_entropy: average must be 'valid' or 'all', got {average!r}")
  if logits.shape[:-1] != labels.shape:
    raise ValueError(f'segmentation_cross_entropy: logits shape {logits.shape} does not match '
                     f'labels shape {labels.shape}; expected [N, H, W, C] and [N, H, W].')
  num_classes = logits.shape[-1]
  log_probs = jax.nn.log_softmax(_f32(logits), axis=-1)
  valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_label)
  safe_labels = jnp.where(valid, labels, 0).astype(jnp.int32)
  nll = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
  counted = (labels >= 0) if average == 'all' else valid
  valid = valid.astype(jnp.float32)
  return _safe_divide(jnp.sum(valid * nll), jnp.sum(counted.astype(jnp.float32)))


def ohem_cross_entropy(logits: jax.Array, labels: jax.Array, thresh: float = 0.7,
                       min_kept: int = 100_000,
                       ignore_label: int = IGNORE_LABEL) -> jax.Array:
  """Online hard example mining CE (DiGA's SYNTHIA scripts, `OhemCrossEntropy`).

  Among the valid pixels, sorted by the probability of their true class, the threshold is the
  larger of `thresh` and the probability at position min(min_kept, n_valid - 1); the loss is the
  mean NLL over the valid pixels whose probability is below it (at least `min_kept` of them when
  there are that many, all but the easiest otherwise). The selection is not differentiated.

  Args:
    logits: ``[N, H, W, C]``; labels: ``[N, H, W]`` (ignore_label or outside [0, C) ignored).

  Returns:
    Float32 scalar; 0 with zero gradient when no pixel is kept (the official mean gives NaN).
  """
  num_classes = logits.shape[-1]
  log_probs = jax.nn.log_softmax(_f32(logits), axis=-1).reshape(-1, num_classes)
  labels = labels.reshape(-1)
  valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_label)
  nll = -jnp.take_along_axis(log_probs, jnp.where(valid, labels, 0)[:, None], axis=-1)[:, 0]
  prob = jax.lax.stop_gradient(jnp.exp(-nll))
  ranked = jnp.sort(jnp.where(valid, prob, jnp.inf))  # Valid pixels first, easiest last.
  n_valid = jnp.sum(valid)
  position = jnp.clip(jnp.minimum(min_kept, n_valid - 1), 0, ranked.shape[0] - 1)
  threshold = jnp.maximum(ranked[position], thresh)
  kept = (valid & (prob < threshold)).astype(jnp.float32)
  return _safe_divide(jnp.sum(kept * nll), jnp.sum(kept))


def soft_cross_entropy(student_logits: jax.Array, teacher_probs: jax.Array,
                       mask: jax.Array | None = None) -> jax.Array:
  """H(q, p) = -sum_c q_c log p_c per pixel, averaged over every pixel or over `mask`.

  Args:
    student_logits: ``[N, H, W, C]``.
    teacher_probs: ``[N, H, W, C]`` target distribution (gradient stopped here).
    mask: optional ``[N, H, W]`` weights; the mean is then sum(mask * H) / (sum(mask) + 1e-7),
      as DiGA's label-filtered variant.

  Returns:
    Float32 scalar.
  """
  _check_same_shape('soft_cross_entropy', student_logits, teacher_probs)
  log_p = jax.nn.log_softmax(_f32(student_logits), axis=-1)
  per_pixel = -jnp.sum(_f32(jax.lax.stop_gradient(teacher_probs)) * log_p, axis=-1)
  if mask is None:
    return jnp.mean(per_pixel)
  mask = _f32(mask)
  return jnp.sum(mask * per_pixel) / (jnp.sum(mask) + 1e-7)


def symmetric_distillation(student_a: jax.Array, student_b: jax.Array, teacher_a: jax.Array,
                           teacher_b: jax.Array, alpha: float = 0.5,
                           mask: jax.Array | None = None) -> jax.Array:
  """DiGA's cross-view distillation: H(softmax T(a), S(b)) + alpha * H(softmax T(b), S(a)).

  `a` is the clean source view, `b` the augmented (CrDoMix) view; all logits ``[N, H, W, C]``.
  Each soft cross-entropy is averaged over every pixel (the official `distillation_loss`), or
  over `mask` (``[N, H, W]``, e.g. the non-ignored pixels: the commented-out variant).
  """
  probs = lambda t: jax.nn.softmax(_f32(jax.lax.stop_gradient(t)), axis=-1)
  return (soft_cross_entropy(student_b, probs(teacher_a), mask)
          + alpha * soft_cross_entropy(student_a, probs(teacher_b), mask))


def adversarial_loss(d_logits: jax.Array, target: float, gan: str = 'bce') -> jax.Array:
  """GAN loss of a patch discriminator against a constant domain label.

  Args:
    d_logits: ``[N, h, w, 1]`` discriminator logits.
    target: 0.0 = source domain, 1.0 = target domain (the official label convention).
    gan: ``'bce'`` (``BCEWithLogitsLoss``, computed stably as softplus(x) - x * t) or
      ``'lsgan'`` (``MSELoss`` of the raw logits to the label, as AdaptSegNet's LS-GAN option).

  Returns:
    Float32 scalar: mean over all N*h*w*1 cells.
  """
  if target not in (0.0, 1.0):
    raise ValueError('adversarial_loss: target must be 0.0 (source) or 1.0 (target), '
                     f'got {target!r}.')
  x = _f32(d_logits)
  if gan == 'bce':
    return jnp.mean(jax.nn.softplus(x) - x * target)
  if gan == 'lsgan':
    return jnp.mean(jnp.square(x - target))
  raise ValueError(f'adversarial_loss: gan must be one of {GAN_MODES}, got {gan!r}.')


def kl_distillation(student_logits: jax.Array,
                    teacher_logits: jax.Array,
                    mode: str = 'paper') -> jax.Array:
  """Output-space KL distillation, in the paper's form or as the released code computes it.

  Args:
    student_logits: ``[N, H, W, C]``.
    teacher_logits: ``[N, H, W, C]``; gradient is stopped.
    mode:
      * ``'paper'``: KL(p_T || p_S) summed over classes, mean over pixels.
      * ``'legacy_zero'``: the released code calls ``nn.KLDivLoss()(log p_S, log p_T)``, i.e. it
        passes log-probabilities where probabilities are expected. On torch <= 1.10 (the paper's
        era) every target element is <= 0 and contributes 0 to the value and 0 to the gradient,
        so the term is identically zero. Kept to reproduce released runs; returns a constant 0.
      * ``'modern_surrogate'``: the same call on torch >= 1.11 returns NaN (log of a negative
        target) but back-propagates the gradient of mean(-log p_T * log p_S) over all N*H*W*C
        elements. This returns that surrogate, a finite value with exactly torch's gradient.
  Returns:
    Float32 scalar.
  """
  _check_same_shape('kl_distillation', student_logits, teacher_logits)
  if mode not in KL_MODES:
    raise ValueError(f'kl_distillation: mode must be one of {KL_MODES}, got {mode!r}.')
  if mode == 'legacy_zero':
    return jnp.zeros((), jnp.float32)
  log_s = jax.nn.log_softmax(_f32(student_logits), axis=-1)
  log_t = jax.nn.log_softmax(_f32(jax.lax.stop_gradient(teacher_logits)), axis=-1)
  if mode == 'modern_surrogate':
    return jnp.mean(-log_t * log_s)
  return jnp.mean(jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1))


def mse_distillation(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Mean squared error to the teacher (``nn.MSELoss()``), teacher gradient stopped.

  Args:
    student: any shape, e.g. ``[N, H, W, C]`` aux-head log-probs (the released code) or features.
    teacher: same shape as ``student``.

  Returns:
    Float32 scalar: mean over all elements.
  """
  _check_same_shape('mse_distillation', student, teacher)
  return jnp.mean(jnp.square(_f32(student) - _f32(jax.lax.stop_gradient(teacher))))


def pseudo_label_cross_entropy(student_logits: jax.Array,
                               teacher_logits: jax.Array,
                               threshold: float = 0.0) -> jax.Array:
  """Cross-entropy of the student against the teacher's argmax labels.

  Args:
    student_logits: ``[N, H, W, C]``.
    teacher_logits: ``[N, H, W, C]``; only its argmax and max-probability are used.
    threshold: pixels whose teacher max-probability is below it are ignored; 0 keeps every
      pixel (the released code).

  Returns:
    Float32 scalar: mean over kept pixels; exactly 0 if none is kept.
  """
  _check_same_shape('pseudo_label_cross_entropy', student_logits, teacher_logits)
  teacher_probs = jax.nn.softmax(_f32(jax.lax.stop_gradient(teacher_logits)), axis=-1)
  labels = jnp.argmax(teacher_probs, axis=-1)
  # Written as a where (not a Python branch) so that a traced threshold also works.
  labels = jnp.where(jnp.max(teacher_probs, axis=-1) >= threshold, labels, IGNORE_LABEL)
  return segmentation_cross_entropy(student_logits, labels)


def self_information(probs: jax.Array) -> jax.Array:
  """ADVENT weighted self-information map, the discriminator input of AdvEnt.

  Args:
    probs: ``[N, H, W, C]`` class probabilities.

  Returns:
    Float32 ``[N, H, W, C]``: ``-p * log2(p + 1e-30) / log2(C)`` (no reduction).
  """
  p = _f32(probs)
  return -p * jnp.log2(p + _ENTROPY_EPS) / jnp.log2(float(p.shape[-1]))


def entropy_loss(logits: jax.Array) -> jax.Array:
  """ADVENT MinEnt loss: mean normalised pixel entropy of ``softmax(logits)``.

  Args:
    logits: ``[N, H, W, C]``.

  Returns:
    Float32 scalar: per-pixel entropy (sum over classes, log base 2, divided by log2 C), mean
    over N*H*W.
  """
  return jnp.mean(jnp.sum(self_information(jax.nn.softmax(_f32(logits), axis=-1)), axis=-1))



def pod_local_embedding(x: jax.Array, scales=(1, 2, 4)) -> jax.Array:
  """POD-local embedding of a feature map (MuHDi / PLOP `_local_pod` after `pow` pre-processing).

  The map is squared; for each scale s it is cut into s x s cells of (H // s) x (W // s) pixels
  (the remainder rows/columns are dropped, empty cells skipped, as the official loop does); each
  cell contributes its width-pooled means `[N, kh, C]` and its height-pooled means `[N, kw, C]`.

  Args:
    x: `[N, H, W, C]` feature map.
    scales: the spatial-pyramid scales.

  Returns:
    `[N, D]` float32, D = C x sum over scales and cells of (kh + kw).
  """
  a = jnp.square(_f32(x))
  n, h, w, _ = a.shape
  parts = []
  for scale in scales:
    kh, kw = h // scale, w // scale
    if not (kh and kw):
      continue
    for i in range(scale):
      for j in range(scale):
        cell = a[:, i * kh:(i + 1) * kh, j * kw:(j + 1) * kw, :]
        parts += [jnp.mean(cell, axis=2).reshape(n, -1), jnp.mean(cell, axis=1).reshape(n, -1)]
  return jnp.concatenate(parts, axis=1)


def pod_local_distillation(student_maps, teacher_maps, scales=(1, 2, 4)) -> jax.Array:
  """MuHDi's feature distillation (`features_distillation`, 'local' pooling, Frobenius).

  Per layer: the L2 norm of the difference of the POD-local embeddings of the teacher's and the
  student's map, averaged over the batch; then the mean over the layers. No normalisation. The
  norm's gradient is 0 where the embeddings are equal (torch's convention, not NaN).

  Args:
    student_maps: sequence of `[N, H_l, W_l, C_l]` maps (MuHDi: the four stage outputs).
    teacher_maps: the same shapes; gradient is stopped.
    scales: spatial-pyramid scales.

  Returns:
    Float32 scalar.
  """
  if len(student_maps) != len(teacher_maps) or not student_maps:
    raise ValueError(f'pod_local_distillation: {len(student_maps)} student maps vs '
                     f'{len(teacher_maps)} teacher maps; expected the same positive number.')
  total = jnp.zeros((), jnp.float32)
  for s, t in zip(student_maps, teacher_maps):
    _check_same_shape('pod_local_distillation', s, t)
    diff = (pod_local_embedding(s, scales)
            - pod_local_embedding(jax.lax.stop_gradient(t), scales))
    squared = jnp.sum(jnp.square(diff), axis=-1)
    positive = squared > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
    total = total + jnp.mean(norm)
  return total / len(student_maps)


def class_mean_kl(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """MuHDi's `kl_divergence`: `F.kl_div(log p_S, p_T, size_average=True)`, i.e. KL(p_T || p_S)
  averaged over all N x H x W x C elements (the per-pixel KL divided by C).

  Args:
    student_logits, teacher_logits: `[N, H, W, C]`; the teacher's gradient is stopped.

  Returns:
    Float32 scalar.
  """
  return kl_distillation(student_logits, teacher_logits, 'paper') / student_logits.shape[-1]


def softmax_mse(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """MuHDi's `mse_loss`: mean over all elements of (softmax(student) - softmax(teacher))^2,
  teacher gradient stopped; `[N, H, W, C]` logits -> float32 scalar."""
  _check_same_shape('softmax_mse', student_logits, teacher_logits)
  return mse_distillation(jax.nn.softmax(_f32(student_logits), axis=-1),
                          jax.nn.softmax(_f32(teacher_logits), axis=-1))
