"""Losses: JAX and the PyTorch reference against float64 NumPy references and torch functionals.

Every check compares values and gradients w.r.t. the student/first input. Arrays are built NHWC;
the torch side receives them transposed to NCHW and its gradients are transposed back.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dakd_jax import losses

N, H, W, C = 2, 5, 6, 7
BACKENDS = ('jax', pytest.param('torch_ref', marks=pytest.mark.torch))
# float32 JAX vs float64 NumPy; float64 torch_ref vs float64 NumPy.
TOL = {'jax': dict(rtol=1e-5, atol=1e-7), 'torch_ref': dict(rtol=1e-10, atol=1e-13)}


def _rng(seed=0):
  return np.random.default_rng(seed)


def _logits(seed, scale=2.0, shape=(N, H, W, C)):
  return (_rng(seed).standard_normal(shape) * scale).astype(np.float32).astype(np.float64)


def _labels(seed=3):
  """Train ids with ignore pixels: 255 and out-of-range values (-1, C, C + 3)."""
  r = _rng(seed)
  labels = r.integers(0, C, size=(N, H, W))
  odd = r.random((N, H, W))
  labels[odd < 0.15] = 255
  labels[(odd >= 0.15) & (odd < 0.2)] = -1
  labels[(odd >= 0.2) & (odd < 0.25)] = C
  labels[(odd >= 0.25) & (odd < 0.28)] = C + 3
  return labels.astype(np.int32)


# ----------------------------------------------------------------------------- NumPy references
def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _softmax_backward(probs, grad_probs):
  """d/dz of a loss given dL/dp, for p = softmax(z)."""
  return probs * (grad_probs - np.sum(probs * grad_probs, -1, keepdims=True))


def _log_softmax_backward(probs, grad_logp):
  return grad_logp - probs * grad_logp.sum(-1, keepdims=True)


def ref_cross_entropy(logits, labels):
  valid = (labels >= 0) & (labels < C) & (labels != 255)
  safe = np.where(valid, labels, 0)
  logp = _np_log_softmax(logits)
  onehot = np.eye(C)[safe]
  w = valid.astype(np.float64)
  den = w.sum()
  if den == 0:
    return 0.0, np.zeros_like(logits)
  value = np.sum(w * -np.sum(onehot * logp, -1)) / den
  grad = (np.exp(logp) - onehot) * w[..., None] / den
  return value, grad


def ref_adversarial(x, target, gan):
  if gan == 'bce':
    value = np.mean(np.logaddexp(0.0, x) - x * target)
    grad = (1.0 / (1.0 + np.exp(-x)) - target) / x.size
  else:
    value = np.mean((x - target) ** 2)
    grad = 2.0 * (x - target) / x.size
  return value, grad


def ref_kl_paper(s, t):
  log_s, log_t = _np_log_softmax(s), _np_log_softmax(t)
  pixels = s.size / C
  return (np.sum(np.exp(log_t) * (log_t - log_s)) / pixels,
          (np.exp(log_s) - np.exp(log_t)) / pixels)


def ref_kl_surrogate(s, t):
  log_s, log_t = _np_log_softmax(s), _np_log_softmax(t)
  value = np.mean(-log_t * log_s)
  return value, _log_softmax_backward(np.exp(log_s), -log_t / log_s.size)


def ref_mse(s, t):
  return np.mean((s - t) ** 2), 2.0 * (s - t) / s.size


def ref_pseudo_label(s, t, threshold=0.0):
  p_t = np.exp(_np_log_softmax(t))
  labels = np.where(p_t.max(-1) >= threshold, p_t.argmax(-1), 255)
  return ref_cross_entropy(s, labels)


def ref_self_information(p):
  return -p * np.log2(p + 1e-30) / np.log2(C)


def ref_entropy(z):
  p = np.exp(_np_log_softmax(z))
  k = z.size / C * np.log2(C)
  value = -np.sum(p * np.log2(p + 1e-30)) / k
  grad_p = -(np.log2(p + 1e-30) + p / ((p + 1e-30) * np.log(2.0))) / k
  return value, _softmax_backward(p, grad_p)


# ----------------------------------------------------------------------------- backend runners
def _to_torch(a, dtype):
  """NHWC float arrays -> NCHW tensors; integer/boolean [N, H, W] maps and scalars unchanged."""
  import torch  # pylint: disable=g-import-not-at-top  (tests marked `torch` only)
  if not isinstance(a, np.ndarray):
    return a
  if a.dtype.kind == 'f':
    t = torch.tensor(a, dtype=dtype)
    return t.permute(0, 3, 1, 2).contiguous() if a.ndim == 4 else t
  return torch.tensor(a.astype(np.int64) if a.dtype.kind in 'iu' else a)


def run(backend, name, x, *args, dtype=None, **kwargs):
  """(value, gradient w.r.t. x) of loss `name` as float64 NumPy, gradient in NHWC."""
  if backend == 'jax':
    fn = getattr(losses, name)
    jargs = [jnp.asarray(a, jnp.float32) if isinstance(a, np.ndarray) and a.dtype.kind == 'f'
             else a for a in args]
    value, grad = jax.value_and_grad(lambda v: fn(v, *jargs, **kwargs))(
        jnp.asarray(x, dtype or jnp.float32))
    return np.float64(value), np.asarray(grad, np.float64)
  import torch  # pylint: disable=g-import-not-at-top
  from dakd_jax.torch_ref import losses as tlosses  # pylint: disable=g-import-not-at-top
  dtype = dtype or torch.float64
  tx = _to_torch(x, dtype).requires_grad_(True)
  fn = getattr(tlosses, name)
  value = fn(tx, *[_to_torch(a, dtype) for a in args],
             **{k: _to_torch(v, dtype) for k, v in kwargs.items()})
  value.backward()
  return float(value.detach()), tx.grad.permute(0, 2, 3, 1).double().numpy()


def assert_close(actual, expected, backend):
  np.testing.assert_allclose(actual[0], expected[0], **TOL[backend])
  np.testing.assert_allclose(actual[1], expected[1], **TOL[backend])


def torch_grad(fn, x):
  """Value and NHWC gradient of a torch function of one NCHW float32 tensor."""
  import torch  # pylint: disable=g-import-not-at-top
  tx = _to_torch(x, torch.float32).requires_grad_(True)
  value = fn(tx)
  value.backward()
  return float(value.detach()), tx.grad.permute(0, 2, 3, 1).double().numpy()


# ----------------------------------------------------------------------------- cross-entropy
@pytest.mark.parametrize('backend', BACKENDS)
def test_cross_entropy_matches_numpy(backend):
  logits, labels = _logits(1), _labels()
  got = run(backend, 'segmentation_cross_entropy', logits, labels)
  assert_close(got, ref_cross_entropy(logits, labels), backend)


@pytest.mark.torch
def test_cross_entropy_matches_torch_functional():
  import torch  # pylint: disable=g-import-not-at-top
  logits, labels = _logits(1), _labels()
  torch_labels = torch.tensor(np.where((labels >= 0) & (labels < C), labels, 255),
                              dtype=torch.int64)
  expected = torch_grad(lambda z: torch.nn.functional.cross_entropy(z, torch_labels,
                                                                    ignore_index=255), logits)
  got = run('jax', 'segmentation_cross_entropy', logits, labels)
  assert_close(got, expected, 'jax')


@pytest.mark.parametrize('backend', BACKENDS)
def test_cross_entropy_all_ignored_is_exactly_zero(backend):
  labels = np.full((N, H, W), 255, np.int32)
  labels[0, 0, :3] = (-1, C, C + 5)
  value, grad = run(backend, 'segmentation_cross_entropy', _logits(1), labels)
  assert value == 0.0
  assert np.all(grad == 0.0)


@pytest.mark.torch
def test_torch_cross_entropy_on_all_ignored_is_nan():
  """Why the guard exists: the plain torch functional divides 0 by 0."""
  import torch  # pylint: disable=g-import-not-at-top
  labels = torch.full((N, H, W), 255, dtype=torch.int64)
  assert torch.isnan(torch.nn.functional.cross_entropy(torch.randn(N, C, H, W), labels,
                                                       ignore_index=255))


# ----------------------------------------------------------------------------- adversarial
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('gan', ['bce', 'lsgan'])
@pytest.mark.parametrize('target', [0.0, 1.0])
def test_adversarial_loss_matches_numpy(backend, gan, target):
  d = _logits(4, scale=3.0, shape=(N, 3, 4, 1))
  assert_close(run(backend, 'adversarial_loss', d, target, gan=gan),
               ref_adversarial(d, target, gan), backend)


def test_bce_is_stable_for_large_logits():
  d = jnp.array([-200.0, -50.0, 50.0, 200.0]).reshape(1, 2, 2, 1)
  value, grad = jax.value_and_grad(losses.adversarial_loss)(d, 1.0)
  np.testing.assert_allclose(value, (200.0 + 50.0) / 4, rtol=1e-6)
  assert np.all(np.isfinite(grad))


# ----------------------------------------------------------------------------- KL distillation
@pytest.mark.parametrize('backend', BACKENDS)
def test_kl_paper_matches_numpy(backend):
  s, t = _logits(5), _logits(6)
  got = run(backend, 'kl_distillation', s, t, mode='paper')
  assert_close(got, ref_kl_paper(s, t), backend)


@pytest.mark.torch
def test_kl_paper_matches_torch_kl_div_sum_over_pixels():
  import torch  # pylint: disable=g-import-not-at-top
  F = torch.nn.functional
  s, t = _logits(5), _logits(6)
  log_t = F.log_softmax(_to_torch(t, torch.float32), 1)
  expected = torch_grad(lambda z: F.kl_div(F.log_softmax(z, 1), log_t, log_target=True,
                                           reduction='sum') / (N * H * W), s)
  assert_close(run('jax', 'kl_distillation', s, t, mode='paper'), expected, 'jax')


@pytest.mark.parametrize('mode', losses.KL_MODES)
def test_kl_teacher_gets_no_gradient(mode):
  s, t = jnp.asarray(_logits(5), jnp.float32), jnp.asarray(_logits(6), jnp.float32)
  grad_t = jax.grad(lambda b: losses.kl_distillation(s, b, mode=mode))(t)
  assert np.all(np.asarray(grad_t) == 0.0)


@pytest.mark.parametrize('backend', BACKENDS)
def test_kl_legacy_zero_is_zero_with_zero_gradient(backend):
  value, grad = run(backend, 'kl_distillation', _logits(5), _logits(6), mode='legacy_zero')
  assert value == 0.0
  assert np.all(grad == 0.0)


@pytest.mark.parametrize('backend', BACKENDS)
def test_kl_modern_surrogate_matches_numpy(backend):
  s, t = _logits(5), _logits(6)
  got = run(backend, 'kl_distillation', s, t, mode='modern_surrogate')
  assert np.isfinite(got[0])
  assert_close(got, ref_kl_surrogate(s, t), backend)


@pytest.mark.torch
@pytest.mark.parametrize('backend', BACKENDS)
def test_kl_modern_surrogate_gradient_is_torch_kldivloss_gradient(backend):
  """The released call: NaN value on torch >= 1.11, yet a finite gradient we must reproduce."""
  import torch  # pylint: disable=g-import-not-at-top
  F = torch.nn.functional
  s, t = _logits(5), _logits(6)
  log_t = F.log_softmax(_to_torch(t, torch.float64), 1)
  tx = _to_torch(s, torch.float64).requires_grad_(True)
  with pytest.warns(UserWarning, match="'mean' divides the total loss"):
    released = torch.nn.KLDivLoss()(F.log_softmax(tx, 1), log_t)
  assert torch.isnan(released)
  released.backward()
  torch_grad_nhwc = tx.grad.permute(0, 2, 3, 1).numpy()
  assert np.all(np.isfinite(torch_grad_nhwc)) and np.any(torch_grad_nhwc != 0)
  _, grad = run(backend, 'kl_distillation', s, t, mode='modern_surrogate')
  np.testing.assert_allclose(grad, torch_grad_nhwc, **TOL[backend])


def test_kl_modes_differ():
  s, t = _logits(5), _logits(6)
  grads = [run('jax', 'kl_distillation', s, t, mode=m)[1] for m in losses.KL_MODES]
  assert not np.allclose(grads[0], grads[2])
  assert np.any(grads[0] != 0) and np.all(grads[1] == 0)


# ----------------------------------------------------------------------------- MSE
@pytest.mark.parametrize('backend', BACKENDS)
def test_mse_matches_numpy(backend):
  s, t = _logits(7), _logits(8)
  assert_close(run(backend, 'mse_distillation', s, t), ref_mse(s, t), backend)


def test_mse_teacher_gets_no_gradient():
  s, t = jnp.asarray(_logits(7), jnp.float32), jnp.asarray(_logits(8), jnp.float32)
  assert np.all(np.asarray(jax.grad(lambda b: losses.mse_distillation(s, b))(t)) == 0.0)


# ----------------------------------------------------------------------------- pseudo-label CE
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('threshold', [0.0, 0.4])
def test_pseudo_label_matches_numpy(backend, threshold):
  s, t = _logits(9), _logits(10)
  kept = np.exp(_np_log_softmax(t)).max(-1) >= threshold
  assert threshold == 0.0 or 0 < kept.sum() < kept.size  # the threshold really drops pixels
  got = run(backend, 'pseudo_label_cross_entropy', s, t, threshold=threshold)
  assert_close(got, ref_pseudo_label(s, t, threshold), backend)


@pytest.mark.torch
def test_pseudo_label_matches_torch_cross_entropy_on_argmax():
  import torch  # pylint: disable=g-import-not-at-top
  s, t = _logits(9), _logits(10)
  targets = _to_torch(t, torch.float32).argmax(1)
  expected = torch_grad(lambda z: torch.nn.functional.cross_entropy(z, targets), s)
  assert_close(run('jax', 'pseudo_label_cross_entropy', s, t), expected, 'jax')


@pytest.mark.parametrize('backend', BACKENDS)
def test_pseudo_label_nothing_confident_is_zero(backend):
  value, grad = run(backend, 'pseudo_label_cross_entropy', _logits(9), _logits(10), threshold=1.01)
  assert value == 0.0
  assert np.all(grad == 0.0)


# ----------------------------------------------------------------------------- ADVENT
@pytest.mark.parametrize('backend', BACKENDS)
def test_self_information_matches_numpy(backend):
  p = np.exp(_np_log_softmax(_logits(11, scale=6.0)))
  p[0, 0, 0] = np.eye(C)[2]  # exact zeros: 0 * log2(1e-30) must be 0, not NaN
  if backend == 'jax':
    got = np.asarray(losses.self_information(jnp.asarray(p, jnp.float32)), np.float64)
  else:
    import torch  # pylint: disable=g-import-not-at-top
    from dakd_jax.torch_ref import losses as tlosses  # pylint: disable=g-import-not-at-top
    got = tlosses.self_information(_to_torch(p, torch.float64)).permute(0, 2, 3, 1).numpy()
  assert got.shape == p.shape and np.all(np.isfinite(got))
  np.testing.assert_allclose(got, ref_self_information(p), **TOL[backend])


@pytest.mark.parametrize('backend', BACKENDS)
def test_entropy_loss_matches_numpy(backend):
  z = _logits(12)
  assert_close(run(backend, 'entropy_loss', z), ref_entropy(z), backend)


def test_entropy_loss_bounds():
  uniform = jnp.zeros((1, 2, 2, C))
  peaked = jnp.zeros((1, 2, 2, C)).at[..., 0].set(100.0)
  np.testing.assert_allclose(losses.entropy_loss(uniform), 1.0, rtol=1e-6)
  assert float(losses.entropy_loss(peaked)) < 1e-6


# ----------------------------------------------------------------------------- JAX vs torch_ref
PARITY_CASES = {
    'ce': ('segmentation_cross_entropy', lambda: (_logits(1), _labels()), {}),
    'bce': ('adversarial_loss', lambda: (_logits(4, shape=(N, 3, 4, 1)), 1.0), {'gan': 'bce'}),
    'lsgan': ('adversarial_loss', lambda: (_logits(4, shape=(N, 3, 4, 1)), 0.0), {'gan': 'lsgan'}),
    'kl_paper': ('kl_distillation', lambda: (_logits(5), _logits(6)), {'mode': 'paper'}),
    'kl_modern': ('kl_distillation', lambda: (_logits(5), _logits(6)),
                  {'mode': 'modern_surrogate'}),
    'mse': ('mse_distillation', lambda: (_logits(7), _logits(8)), {}),
    'pseudo': ('pseudo_label_cross_entropy', lambda: (_logits(9), _logits(10)), {'threshold': 0.4}),
    'entropy': ('entropy_loss', lambda: (_logits(12),), {}),
}


@pytest.mark.torch
@pytest.mark.parametrize('case', sorted(PARITY_CASES))
def test_jax_matches_torch_ref_float32(case):
  import torch  # pylint: disable=g-import-not-at-top
  name, make_args, kwargs = PARITY_CASES[case]
  args = make_args()
  expected = run('torch_ref', name, *args, dtype=torch.float32, **kwargs)
  assert_close(run('jax', name, *args, **kwargs), expected, 'jax')


# ----------------------------------------------------------------------------- dtypes, jit, errors
@pytest.mark.parametrize('case', sorted(PARITY_CASES))
def test_bf16_inputs_give_float32_close_to_fp32(case):
  name, make_args, kwargs = PARITY_CASES[case]
  args = make_args()
  fn = getattr(losses, name)
  cast = lambda dtype: [jnp.asarray(a, dtype) if isinstance(a, np.ndarray) and a.dtype.kind == 'f'
                        else a for a in args]
  out_bf16 = fn(*cast(jnp.bfloat16), **kwargs)
  assert out_bf16.dtype == jnp.float32
  # Same (bf16-rounded) numbers computed in float32 give the same result ...
  rounded = [jnp.asarray(a, jnp.float32) if isinstance(a, jax.Array) else a
             for a in cast(jnp.bfloat16)]
  np.testing.assert_allclose(out_bf16, fn(*rounded, **kwargs), rtol=1e-6)
  # ... and rounding the inputs to bf16 moves it only a little from the fp32 result.
  np.testing.assert_allclose(out_bf16, fn(*cast(jnp.float32), **kwargs), rtol=3e-2, atol=1e-3)


@pytest.mark.parametrize('case', sorted(PARITY_CASES))
def test_jit_matches_eager(case):
  name, make_args, kwargs = PARITY_CASES[case]
  args = [jnp.asarray(a, jnp.float32) if isinstance(a, np.ndarray) and a.dtype.kind == 'f' else
          (jnp.asarray(a) if isinstance(a, np.ndarray) else a) for a in make_args()]
  fn = functools.partial(getattr(losses, name), **kwargs)
  arrays = [i for i, a in enumerate(args) if isinstance(a, jax.Array)]

  def from_arrays(*xs):
    full = list(args)
    for i, x in zip(arrays, xs):
      full[i] = x
    return fn(*full)

  jitted = jax.jit(jax.value_and_grad(from_arrays))
  eager = jax.value_and_grad(from_arrays)
  xs = [args[i] for i in arrays]
  np.testing.assert_allclose(jitted(*xs)[0], eager(*xs)[0], rtol=1e-6)
  np.testing.assert_allclose(jitted(*xs)[1], eager(*xs)[1], rtol=1e-5, atol=1e-8)


def test_pseudo_label_threshold_can_be_traced():
  s, t = jnp.asarray(_logits(9), jnp.float32), jnp.asarray(_logits(10), jnp.float32)
  got = jax.jit(losses.pseudo_label_cross_entropy)(s, t, 0.4)
  np.testing.assert_allclose(got, ref_pseudo_label(_logits(9), _logits(10), 0.4)[0], rtol=1e-5)


@pytest.mark.parametrize('call, message', [
    (lambda: losses.kl_distillation(jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 2, 3)), mode='kl'),
     'mode must be one of'),
    (lambda: losses.kl_distillation(jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 3, 3))),
     'student shape'),
    (lambda: losses.adversarial_loss(jnp.zeros((1, 2, 2, 1)), 0.5), 'target must be'),
    (lambda: losses.adversarial_loss(jnp.zeros((1, 2, 2, 1)), 1.0, gan='wgan'), 'gan must be'),
    (lambda: losses.segmentation_cross_entropy(jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 3), int)),
     'labels shape'),
])
def test_bad_input_raises_clear_error(call, message):
  with pytest.raises(ValueError, match=message):
    call()
