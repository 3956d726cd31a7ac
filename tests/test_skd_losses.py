"""SKD losses: values and gradients against the float64 PyTorch reference (written from the spec),
including the WGAN-GP penalty's double backward through the holistic discriminator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dakd_jax import models
from dakd_jax import skd_losses
from dakd_jax.tools import convert

pytestmark = pytest.mark.torch
TOL = dict(rtol=2e-5, atol=1e-7)


def _nchw(torch, x):
  return torch.tensor(np.asarray(x, np.float64).transpose(0, 3, 1, 2), requires_grad=True)


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _random(seed, shape, scale=2.0):
  return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _check(torch, jax_fn, torch_fn, student, teacher):
  """Value and student gradient of `jax_fn(student, teacher)` vs float64 `torch_fn`."""
  value, grad = jax.value_and_grad(jax_fn)(jnp.asarray(student), jnp.asarray(teacher))
  s, t = _nchw(torch, student), _nchw(torch, teacher)
  expected = torch_fn(s, t)
  expected.backward()
  np.testing.assert_allclose(value, expected.item(), **TOL)
  np.testing.assert_allclose(grad, _nhwc(s.grad), rtol=2e-5,
                             atol=1e-5 * np.abs(_nhwc(s.grad)).max())  # float32 vs float64.
  assert t.grad is None or not t.grad.abs().sum()  # No gradient reaches the teacher.
  return float(value)


def test_pixelwise_matches_reference_and_sums_over_batch(torch):
  from dakd_jax.torch_ref import skd_losses as ref  # pylint: disable=g-import-not-at-top
  student, teacher = _random(0, (3, 9, 11, 5)), _random(1, (3, 9, 11, 5))
  total = _check(torch, skd_losses.pixelwise_distillation, ref.pixelwise_distillation,
                 student, teacher)
  parts = sum(float(skd_losses.pixelwise_distillation(student[i:i + 1], teacher[i:i + 1]))
              for i in range(3))
  np.testing.assert_allclose(total, parts, rtol=1e-5)  # Summed over the batch, / (h w) only.
  with pytest.raises(ValueError, match='does not match teacher shape'):
    skd_losses.pixelwise_distillation(student, teacher[..., :4])


@pytest.mark.parametrize('h, w, nodes', [(65, 65, (3, 3)), (9, 11, (3, 3)), (8, 16, (2, 2))])
def test_pairwise_matches_reference(torch, h, w, nodes):
  from dakd_jax.torch_ref import skd_losses as ref  # pylint: disable=g-import-not-at-top
  student, teacher = _random(2, (2, h, w, 6)), _random(3, (2, h, w, 10))
  assert skd_losses.max_pool_nodes(jnp.asarray(student)).shape == (2, *nodes, 6)
  value = _check(torch, skd_losses.pairwise_distillation, ref.pairwise_distillation,
                 student, teacher)
  assert value > 0
  assert float(skd_losses.pairwise_distillation(teacher, teacher)) == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize('kind', skd_losses.ADV_KINDS)
def test_critic_and_generator_losses(torch, kind):
  from dakd_jax.torch_ref import skd_losses as ref  # pylint: disable=g-import-not-at-top
  real, fake = _random(4, (4, 2, 2, 1), 1.5), _random(5, (4, 2, 2, 1), 1.5)
  got, grads = jax.value_and_grad(skd_losses.critic_loss, argnums=(0, 1))(
      jnp.asarray(real), jnp.asarray(fake), kind)
  r, f = _nchw(torch, real), _nchw(torch, fake)
  expected = ref.critic_loss(r, f, kind)
  expected.backward()
  np.testing.assert_allclose(got, expected.item(), **TOL)
  np.testing.assert_allclose(grads[0], _nhwc(r.grad), **TOL)
  np.testing.assert_allclose(grads[1], _nhwc(f.grad), **TOL)
  f.grad = None
  expected = ref.generator_loss(f)
  expected.backward()
  got, grad = jax.value_and_grad(skd_losses.generator_loss)(jnp.asarray(fake))
  np.testing.assert_allclose(got, expected.item(), **TOL)
  np.testing.assert_allclose(grad, _nhwc(f.grad), **TOL)
  with pytest.raises(ValueError, match='kind must be one of'):
    skd_losses.critic_loss(real, fake, 'bce')


def test_gradient_penalty_per_sample_alpha_and_double_backward_small_critic(torch):
  from dakd_jax.torch_ref import skd_losses as ref  # pylint: disable=g-import-not-at-top
  real, fake = _random(8, (3, 4, 5, 2)), _random(9, (3, 4, 5, 2))
  alpha = np.array([0.0, 0.5, 0.9], np.float32)
  weight = np.array([0.7, -1.3], np.float32)
  critic = lambda w: lambda y: jnp.sum(jnp.tanh(y * w), axis=(1, 2, 3))
  got, grad = jax.value_and_grad(lambda w: skd_losses.gradient_penalty(
      critic(w), skd_losses.interpolate(real, fake, alpha)))(jnp.asarray(weight))
  w = torch.tensor(weight, dtype=torch.float64, requires_grad=True)
  expected = ref.gradient_penalty(lambda y: torch.tanh(y * w.view(1, -1, 1, 1)).sum(dim=(1, 2, 3)),
                                  _nchw(torch, real), _nchw(torch, fake),
                                  torch.tensor(alpha, dtype=torch.float64))
  expected.backward()
  np.testing.assert_allclose(got, expected.item(), rtol=1e-5)
  np.testing.assert_allclose(grad, w.grad.numpy(), rtol=1e-4)


@pytest.mark.slow
def test_gradient_penalty_value_and_double_backward(torch):
  from dakd_jax.torch_ref import models as torch_models  # pylint: disable=g-import-not-at-top
  from dakd_jax.torch_ref import skd  # pylint: disable=g-import-not-at-top
  from dakd_jax.torch_ref import skd_losses as ref  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  critic = torch_models.randomize_batchnorm_(skd.Discriminator(5, 8), 0).double().eval()
  with torch.no_grad():
    critic.attn1.gamma.fill_(0.5)
    critic.attn2.gamma.fill_(-0.3)
  variables = convert.torch_to_flax(critic.state_dict(), 'skd_discriminator', num_classes=5,
                                    conv_dim=8)
  model = models.create_model('skd_discriminator', 5, conv_dim=8)
  real, fake = _random(6, (2, 65, 65, 5), 3.0), _random(7, (2, 65, 65, 5), 3.0)
  alpha = np.array([0.3, 0.8], np.float32)

  def penalty(params):
    x = skd_losses.interpolate(real, fake, alpha)
    return skd_losses.gradient_penalty(lambda y: model.apply({**variables, 'params': params}, y),
                                       x)

  got, grads = jax.jit(jax.value_and_grad(penalty))(variables['params'])
  expected = ref.gradient_penalty(critic, _nchw(torch, real), _nchw(torch, fake),
                                  torch.tensor(alpha, dtype=torch.float64))
  expected.backward()
  np.testing.assert_allclose(got, expected.item(), rtol=1e-4)
  for flax_path, torch_param in ((('l1', 'kernel'), critic.l1[0].weight_orig),
                                 (('attn2', 'gamma'), critic.attn2.gamma),
                                 (('preprocess', 'scale'), critic.preprocess_additional.weight),
                                 (('last', 'kernel'), critic.last[0].weight)):
    grad = grads[flax_path[0]][flax_path[1]]
    expected_grad = torch_param.grad.numpy()
    if expected_grad.ndim == 4:
      expected_grad = expected_grad.transpose(2, 3, 1, 0)
    scale = np.abs(expected_grad).max()
    assert scale > 0
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-3, atol=1e-4 * scale)


def test_gradient_penalty_of_a_flat_critic_is_one_without_nan():
  x = jnp.ones((2, 4, 4, 3))
  value, grad = jax.value_and_grad(
      lambda w: skd_losses.gradient_penalty(lambda y: w * 0.0 * jnp.sum(y), x))(2.0)
  assert float(value) == 1.0 and float(grad) == 0.0
