"""SKD's networks: PSPNet teacher/student counts and shapes, conversion of the official key names,
inference-mode parity against the PyTorch reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dakd_jax import models
from dakd_jax.models import pspnet
from dakd_jax.tools import convert


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _rel(a, ref):
  """max |a - ref| / max |ref|."""
  return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize('name, total', [('pspnet_r101', 70_437_350), ('pspnet_r18', 13_068_262)])
def test_pspnet_param_counts(name, total):
  variables = models.abstract_variables(name)
  assert models.count_params(variables) == total
  assert models.head_modules(name) == ('head', 'dsn_classifier')


@pytest.mark.parametrize('name, psp, layer3', [
    pytest.param('pspnet_r101', 512, 1024, marks=pytest.mark.slow), ('pspnet_r18', 128, 256)])
def test_pspnet_stride_8_and_features(name, psp, layer3):
  model = models.create_model(name, return_features=True)
  x = jax.ShapeDtypeStruct((2, 512, 512, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  out = jax.eval_shape(model.apply, variables, x)
  assert out['main'].shape == out['aux'].shape == (2, 65, 65, 19)
  assert out['main_features'].shape == (2, 65, 65, psp)
  assert out['aux_features'].shape == (2, 65, 65, layer3)


@pytest.mark.parametrize('in_size, out_size', [(9, 6), (65, 3), (7, 1), (5, 6)])
def test_adaptive_avg_pool_matches_torch(torch, in_size, out_size):
  x = torch.randn(2, 3, in_size, in_size + 2)
  expected = torch.nn.functional.adaptive_avg_pool2d(x, out_size)
  got = pspnet.adaptive_avg_pool(jnp.asarray(_nhwc(x)), out_size)
  np.testing.assert_allclose(got, _nhwc(expected), rtol=1e-6, atol=1e-6)


def _check_channel_dropout_in_training(model, variables, x):
  out, _ = jax.jit(lambda v, x, rng: model.apply(v, x, train=True, mutable=['batch_stats'],
                                                 rngs={'dropout': rng}))(
                                                     variables, x, jax.random.PRNGKey(2))
  features = np.asarray(out['main_features'])  # [2, 6, 7, 8]
  dropped = np.all(features == 0, axis=(1, 2))  # Whole channels of one sample (rate 0.1).
  assert dropped.any() and not dropped.all()
  with pytest.raises(Exception, match='dropout'):  # Training without an rng is refused.
    jax.eval_shape(lambda: model.apply(variables, x, train=True, mutable=['batch_stats']))


def _convert_and_compare(torch, ref, name, x, **options):
  from dakd_jax.torch_ref import models as torch_models  # pylint: disable=g-import-not-at-top
  from dakd_jax.torch_ref import skd  # pylint: disable=g-import-not-at-top
  torch_models.randomize_batchnorm_(ref, seed=3)
  ref.eval()
  state = ref.state_dict()
  if name == 'pspnet_r101':
    state = skd.released_teacher_keys(state)
    assert 'head.0.stages.3.1.weight' in state and 'head.1.bias' in state
  variables = convert.torch_to_flax(state, name, num_classes=ref.head.out_channels, **options)
  assert models.count_params(variables) == sum(p.numel() for p in ref.parameters())
  model = models.create_model(name, ref.head.out_channels, return_features=True, **options)
  with torch.no_grad():
    main, dsn, feat = ref(x)[:3]
  out = jax.jit(model.apply)(variables, jnp.asarray(_nhwc(x)))
  for key, expected in (('main', main), ('aux', dsn), ('main_features', feat)):
    assert _rel(out[key], _nhwc(expected)) < 1e-4, key
  return model, variables


@pytest.mark.slow
def test_pspnet_r18_converted_forward_parity(torch):
  from dakd_jax.torch_ref import skd  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  ref = skd.PSPNet('pspnet_r18', num_classes=5)
  assert sum(p.numel() for p in skd.PSPNet('pspnet_r18').parameters()) == 13_068_262
  _convert_and_compare(torch, ref, 'pspnet_r18', torch.randn(2, 3, 65, 73))


@pytest.mark.slow
def test_pspnet_r101_released_teacher_keys_forward_parity(torch):
  from dakd_jax.torch_ref import skd  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  ref = skd.PSPNet('pspnet_r101', num_classes=19)
  assert sum(p.numel() for p in ref.parameters()) == 70_437_350
  _convert_and_compare(torch, ref, 'pspnet_r101', torch.randn(1, 3, 65, 65))


def test_pspnet_r18_small_width_parity_dropout_and_key_problems(torch):
  """The quick tier's PSPNet check (the R101 bottleneck path: the slow full-size test)."""
  from dakd_jax.torch_ref import skd  # pylint: disable=g-import-not-at-top
  torch.manual_seed(1)
  ref = skd.PSPNet('pspnet_r18', num_classes=4, width=0.0625)
  x = torch.randn(2, 3, 41, 49)
  model, variables = _convert_and_compare(torch, ref, 'pspnet_r18', x, width=0.0625)
  _check_channel_dropout_in_training(model, variables, jnp.asarray(_nhwc(x)))
  state = ref.state_dict()
  state['fc.weight'] = torch.zeros(1000, 32)  # An ImageNet classifier: dropped.
  convert.torch_to_flax(state, 'pspnet_r18', num_classes=4, width=0.0625)
  del state['dsn.3.bias']
  with pytest.raises(ValueError, match=r"missing keys \['dsn.3.bias'\]"):
    convert.torch_to_flax(state, 'pspnet_r18', num_classes=4, width=0.0625)


# ------------------------------------------------------------------------------ discriminator

def test_discriminator_counts_and_collections():
  variables = models.abstract_variables('skd_discriminator')
  assert models.count_params(variables) == 3_191_721
  spectral = sum(x.size for x in jax.tree.leaves(variables['spectral']))
  assert spectral == 8_432 and models.count_params(variables) + spectral == 3_200_153
  assert variables['spectral']['l1']['v'].shape == (19 * 16,)
  model = models.create_model('skd_discriminator')
  out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((2, 65, 65, 19), jnp.float32))
  assert out.shape == (2, 1, 1, 1)


def _disc_pair(torch, seed=0, num_classes=5, conv_dim=8):
  from dakd_jax.torch_ref import models as torch_models  # pylint: disable=g-import-not-at-top
  from dakd_jax.torch_ref import skd  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  ref = torch_models.randomize_batchnorm_(skd.Discriminator(num_classes, conv_dim), seed)
  with torch.no_grad():  # gamma starts at 0; give the attention a say.
    ref.attn1.gamma.fill_(0.7)
    ref.attn2.gamma.fill_(-0.4)
  model = models.create_model('skd_discriminator', num_classes, conv_dim=conv_dim)
  return ref, model


@pytest.mark.parametrize('names', ['sagan', 'torch'])
def test_discriminator_inference_parity_and_key_names(torch, names):
  from dakd_jax.torch_ref import skd  # pylint: disable=g-import-not-at-top
  ref, model = _disc_pair(torch)
  state = ref.state_dict()
  if names == 'sagan':
    state = skd.sagan_keys(state)
    assert {'l2.0.module.weight_bar', 'l2.0.module.weight_u', 'attn2.gamma',
            'last.0.bias'} <= set(state)
  variables = convert.torch_to_flax(state, 'skd_discriminator', num_classes=5, conv_dim=8)
  np.testing.assert_array_equal(variables['spectral']['l3']['v'],
                                ref.l3[0].weight_v.numpy())
  x = 3.0 * torch.randn(2, 5, 70, 66)
  with torch.no_grad():
    expected = ref.eval()(x)
  got = jax.jit(model.apply)(variables, jnp.asarray(_nhwc(x)))
  assert got.shape == (2, 1, 1, 1)  # 70x66 -> 35x33 -> 17x16 -> 8x8 -> 4x4 -> 1x1.
  assert _rel(got, _nhwc(expected)) < 1e-4


def test_discriminator_training_forward_power_iteration_and_gradient(torch):
  ref, model = _disc_pair(torch, seed=1)
  variables = convert.torch_to_flax(ref.state_dict(), 'skd_discriminator', num_classes=5,
                                    conv_dim=8)
  x = 3.0 * torch.randn(3, 5, 65, 65)
  ref.train()
  out = ref(x)
  (out ** 2).sum().backward()

  def loss(params, x):
    y, updated = model.apply({**variables, 'params': params}, x, train=True,
                             mutable=['batch_stats', 'spectral'])
    return jnp.sum(y ** 2), (y, updated)

  grads, (got, updated) = jax.jit(jax.grad(loss, has_aux=True))(
      variables['params'], jnp.asarray(_nhwc(x)))
  assert _rel(got, _nhwc(out.detach())) < 1e-4
  for i in range(1, 5):  # One power iteration, stored (torch updates its buffers in place).
    conv = getattr(ref, f'l{i}')[0]
    for name in ('u', 'v'):
      np.testing.assert_allclose(updated['spectral'][f'l{i}'][name],
                                 getattr(conv, f'weight_{name}').numpy(), atol=1e-5)
    grad = conv.weight_orig.grad.numpy().transpose(2, 3, 1, 0)
    assert _rel(grads[f'l{i}']['kernel'], grad) < 1e-4
  np.testing.assert_allclose(updated['batch_stats']['preprocess']['var'],
                             ref.preprocess_additional.running_var.numpy(), rtol=1e-5)
  assert _rel(grads['attn2']['gamma'], ref.attn2.gamma.grad.numpy()) < 1e-4
