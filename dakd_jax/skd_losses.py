"""Structured knowledge distillation losses (SKD, Liu et al. CVPR 2019; method.md §5.2).

Pure functions of NHWC arrays, computed in float32, teachers gradient-stopped:
- `pixelwise_distillation`: soft cross-entropy of the student against the teacher's per-pixel
  class distribution, SKD's normalisation (summed over the batch, divided by H'W');
- `pairwise_distillation`: squared difference of the pooled nodes' cosine-affinity matrices;
- holistic distillation as a WGAN-GP (or hinge) game: `critic_loss`, `generator_loss`,
  `gradient_penalty`.
`OFFICIAL_WEIGHTS` are the released run script's, `PAPER_WEIGHTS` the paper's (one λ = 10 for the
pixel and pair terms; SKD issue #34 notes the mismatch).
"""

import math

import jax
import jax.numpy as jnp

ADV_KINDS = ('wgan-gp', 'hinge')
OFFICIAL_WEIGHTS = {'lambda_pi': 10.0, 'lambda_pa': 0.5, 'lambda_d': 0.1, 'lambda_gp': 10.0}
PAPER_WEIGHTS = {'lambda_pi': 10.0, 'lambda_pa': 10.0, 'lambda_d': 0.1, 'lambda_gp': 10.0}
_NORM_EPS = 1e-8


def _f32(x: jax.Array) -> jax.Array:
  return jnp.asarray(x).astype(jnp.float32)


def _check_same_shape(fn: str, student: jax.Array, teacher: jax.Array, channels: bool) -> None:
  """Equal N, H, W (and C if `channels`) or a one-line ValueError."""
  dims = 4 if channels else 3
  if student.shape[:dims] != teacher.shape[:dims]:
    raise ValueError(f'{fn}: student shape {student.shape} does not match teacher shape '
                     f'{teacher.shape}; expected NHWC maps of equal size')


def pixelwise_distillation(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """Sum over n, h, w, c of -softmax(teacher) * log_softmax(student), divided by h * w.

  Args:
    student_logits, teacher_logits: `[N, h, w, C]` score maps (SKD: the stride-8 maps, not
      upsampled).

  Returns:
    Float32 scalar. Not averaged over the batch (it grows with N, as SKD's); the cross-entropy
    form of KL(q_T || q_S), whose gradient it shares.
  """
  _check_same_shape('pixelwise_distillation', student_logits, teacher_logits, True)
  teacher = jax.nn.softmax(jax.lax.stop_gradient(_f32(teacher_logits)), axis=-1)
  log_student = jax.nn.log_softmax(_f32(student_logits), axis=-1)
  h, w = student_logits.shape[1:3]
  return -jnp.sum(teacher * log_student) / (h * w)


def max_pool_nodes(features: jax.Array, scale: float = 0.5) -> jax.Array:
  """SKD's node grouping: max-pool with kernel = stride = int(scale * size) per axis, ceil mode.

  [N, H, W, C] -> [N, ceil(H / kh), ceil(W / kw), C] (65x65 at scale 0.5: 3x3 nodes). The last
  window of an axis covers whatever is left of it (torch's `ceil_mode=True`, no padding).
  """
  n, h, w, c = features.shape
  kh, kw = int(h * scale), int(w * scale)
  if kh < 1 or kw < 1:
    raise ValueError(f'max_pool_nodes: a {h}x{w} map at scale {scale} gives an empty window')
  pads = [(0, 0), (0, math.ceil(h / kh) * kh - h), (0, math.ceil(w / kw) * kw - w), (0, 0)]
  return jax.lax.reduce_window(features, -jnp.inf, jax.lax.max, (1, kh, kw, 1), (1, kh, kw, 1),
                               pads)


def _affinity(nodes: jax.Array) -> jax.Array:
  """[N, h, w, C] -> [N, M, M] cosine affinities of the M = h * w nodes (norm not differentiated)."""
  flat = nodes.reshape(nodes.shape[0], -1, nodes.shape[-1])
  norm = jax.lax.stop_gradient(jnp.linalg.norm(flat, axis=-1, keepdims=True)) + _NORM_EPS
  flat = flat / norm
  return jnp.einsum('nmc,nkc->nmk', flat, flat)


def pairwise_distillation(student_features: jax.Array, teacher_features: jax.Array,
                          scale: float = 0.5) -> jax.Array:
  """Sum of (a_T - a_S)^2 over node pairs, divided by M^2 and by N (SKD's `sim_dis_compute`).

  Args:
    student_features, teacher_features: `[N, H, W, C_s]` and `[N, H, W, C_t]` feature maps (SKD:
      the PSP bottleneck outputs; the channel counts may differ).
    scale: node window as a fraction of the map size (`max_pool_nodes`).

  Returns:
    Float32 scalar: mean over the batch of the mean squared affinity difference.
  """
  _check_same_shape('pairwise_distillation', student_features, teacher_features, False)
  student = _affinity(max_pool_nodes(_f32(student_features), scale))
  teacher = _affinity(max_pool_nodes(jax.lax.stop_gradient(_f32(teacher_features)), scale))
  n, m = student.shape[:2]
  return jnp.sum(jnp.square(teacher - student)) / (m * m) / n


def critic_loss(d_real: jax.Array, d_fake: jax.Array, kind: str = 'wgan-gp') -> jax.Array:
  """The discriminator's loss on teacher (real) and student (fake) scores of any shape.

  'wgan-gp': -mean(d_real) + mean(d_fake) (add `gradient_penalty` separately);
  'hinge': mean(relu(1 - d_real)) + mean(relu(1 + d_fake)).
  """
  if kind not in ADV_KINDS:
    raise ValueError(f'critic_loss: kind must be one of {ADV_KINDS}, got {kind!r}')
  d_real, d_fake = _f32(d_real), _f32(d_fake)
  if kind == 'hinge':
    return jnp.mean(jax.nn.relu(1.0 - d_real)) + jnp.mean(jax.nn.relu(1.0 + d_fake))
  return -jnp.mean(d_real) + jnp.mean(d_fake)


def generator_loss(d_fake: jax.Array) -> jax.Array:
  """The student's adversarial loss, -mean(d_fake) (SKD uses it for both kinds)."""
  return -jnp.mean(_f32(d_fake))


def interpolate(real: jax.Array, fake: jax.Array, alpha: jax.Array) -> jax.Array:
  """alpha * real + (1 - alpha) * fake with one alpha per sample (`alpha`: [N])."""
  alpha = _f32(alpha).reshape(-1, *([1] * (real.ndim - 1)))
  return alpha * _f32(real) + (1.0 - alpha) * _f32(fake)


def gradient_penalty(critic, interpolated: jax.Array, has_aux: bool = False):
  """mean over samples of (||d sum(critic(x)) / dx||_2 - 1)^2 at x = `interpolated`.

  Args:
    critic: maps `[N, H, W, C]` to scores of any shape; differentiable (its parameters are
      closed over, so the result is differentiable w.r.t. them: the double backward of WGAN-GP).
    interpolated: `[N, H, W, C]` points between real and fake maps (`interpolate`), treated as
      constants.
    has_aux: `critic` returns `(scores, aux)` (e.g. a training-mode critic's updated state).

  Returns:
    Float32 scalar (with `has_aux`, `(scalar, aux)`). A sample whose gradient is exactly zero
    contributes 1 with a zero (not NaN) gradient.
  """
  x = jax.lax.stop_gradient(_f32(interpolated))

  def total(x):
    out = critic(x)
    scores, aux = out if has_aux else (out, None)
    return jnp.sum(_f32(scores)), aux

  grad, aux = jax.grad(total, has_aux=True)(x)
  squared = jnp.sum(jnp.square(grad.reshape(grad.shape[0], -1)), axis=1)
  positive = squared > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
  penalty = jnp.mean(jnp.square(norm - 1.0))
  return (penalty, aux) if has_aux else penalty
