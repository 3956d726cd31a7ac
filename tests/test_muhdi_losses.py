"""MuHDi's distillation terms (POD-local, class-mean KL, softmax MSE): values and gradients
against the PyTorch reference (float64) and hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dakd_jax import losses

pytestmark = pytest.mark.torch
SHAPES = [(2, 8, 16, 5), (2, 4, 8, 7), (2, 9, 13, 3), (2, 3, 5, 4)]  # 3x5: scale 4 is empty.


def _maps(seed, shapes=SHAPES):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=s) for s in shapes]


def _nchw(torch, a, grad=False):
  return torch.tensor(np.asarray(a).transpose(0, 3, 1, 2), dtype=torch.float64,
                      requires_grad=grad)


def _grad_nhwc(t):
  return t.grad.numpy().transpose(0, 2, 3, 1)


@pytest.mark.slow  # Compiling the gradient of 4 x 21 cells' pooling: ~5 s.
def test_pod_local_matches_torch_value_and_gradient(torch):
  from dakd_jax.torch_ref import muhdi_losses as R  # pylint: disable=g-import-not-at-top
  new, old = _maps(0), _maps(1)
  value, grads = jax.jit(jax.value_and_grad(losses.pod_local_distillation))(
      [jnp.asarray(m, jnp.float32) for m in new], [jnp.asarray(m, jnp.float32) for m in old])
  new_t = [_nchw(torch, m, grad=True) for m in new]
  ref = R.features_distillation([_nchw(torch, m) for m in old], new_t)
  ref.backward()
  np.testing.assert_allclose(value, ref.item(), rtol=2e-6)
  for g, t in zip(grads, new_t):
    np.testing.assert_allclose(g, _grad_nhwc(t), rtol=1e-4, atol=1e-7)


def test_pod_local_embedding_by_hand():
  """2x4 map, one channel: scale 1 pools rows and columns of x^2; scale 2 pools four 1x2 cells;
  scale 4 has no cell of one pixel's height (H // 4 = 0) and is skipped."""
  x = np.arange(8, dtype=np.float32).reshape(1, 2, 4, 1)
  sq = x[0, :, :, 0] ** 2
  want = [sq.mean(1), sq.mean(0)]
  for i in range(2):
    for j in range(2):
      cell = sq[i:i + 1, 2 * j:2 * j + 2]
      want += [cell.mean(1), cell.mean(0)]
  np.testing.assert_allclose(losses.pod_local_embedding(jnp.asarray(x))[0],
                             np.concatenate(want), rtol=1e-6)


def test_pod_local_is_zero_with_zero_gradient_on_equal_maps():
  maps = [jnp.asarray(m, jnp.float32) for m in _maps(2, SHAPES[:2])]
  value, grads = jax.jit(jax.value_and_grad(losses.pod_local_distillation))(maps, maps)
  assert float(value) == 0.0
  assert all(np.all(np.asarray(g) == 0) for g in grads)


def test_pod_local_teacher_gets_no_gradient():
  new, old = ([jnp.asarray(m, jnp.float32) for m in _maps(s)] for s in (3, 4))
  grads = jax.jit(jax.grad(lambda t: losses.pod_local_distillation(new, t)))(old)
  assert all(np.all(np.asarray(g) == 0) for g in grads)


@pytest.mark.parametrize('name, ref_name', [('class_mean_kl', 'kl_divergence'),
                                            ('softmax_mse', 'mse_loss')])
def test_logit_distillation_matches_torch(torch, name, ref_name):
  """Student first, target second, as the official helpers; the target's gradient is stopped."""
  from dakd_jax.torch_ref import muhdi_losses as R  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(5)
  student, teacher = 3 * rng.normal(size=(2, 6, 10, 7)), 3 * rng.normal(size=(2, 6, 10, 7))
  fn = getattr(losses, name)
  value, (g_s, g_t) = jax.value_and_grad(fn, argnums=(0, 1))(
      jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32))
  s_t = _nchw(torch, student, grad=True)
  ref = getattr(R, ref_name)(s_t, _nchw(torch, teacher))
  ref.backward()
  np.testing.assert_allclose(value, ref.item(), rtol=1e-5)
  np.testing.assert_allclose(g_s, _grad_nhwc(s_t), rtol=1e-4, atol=1e-9)
  assert np.all(np.asarray(g_t) == 0)


def test_class_mean_kl_is_per_pixel_kl_over_classes():
  rng = np.random.default_rng(6)
  s, t = rng.normal(size=(1, 3, 4, 5)), rng.normal(size=(1, 3, 4, 5))
  log_s = s - np.log(np.exp(s).sum(-1, keepdims=True))
  log_t = t - np.log(np.exp(t).sum(-1, keepdims=True))
  want = np.mean(np.exp(log_t) * (log_t - log_s))
  np.testing.assert_allclose(losses.class_mean_kl(jnp.asarray(s, jnp.float32),
                                                  jnp.asarray(t, jnp.float32)), want, rtol=1e-5)
