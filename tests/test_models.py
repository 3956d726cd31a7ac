"""Models: parameter counts, output shapes, torch-exact BatchNorm and resize, parity vs PyTorch."""

import copy
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dakd_jax import models
from dakd_jax import networks
from dakd_jax.models import layers
from dakd_jax.models.deeplab import ASPPHead
from dakd_jax.tools import convert


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _rel(a, ref):
  """max |a - ref| / max |ref|."""
  return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / np.max(np.abs(ref)))


def _shapes(name, input_shape, **options):
  model = models.create_model(name, **options)
  x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return jax.tree.map(lambda s: s.shape, jax.eval_shape(model.apply, variables, x))


# ------------------------------------------------------------------------------ parameter counts

@pytest.mark.parametrize('name, backbone, total', [
    ('drn_d_22', 15_880_752, 15_900_246),
    ('drn_d_38', 25_988_912, 26_008_406),
])
def test_drn_param_counts(name, backbone, total):
  variables = models.abstract_variables(name)
  heads = {k: v for k, v in variables['params'].items() if k in models.head_modules(name)}
  assert sorted(heads) == ['seg_aux', 'seg_main']
  assert models.count_params(variables) == total
  assert models.count_params(variables) - models.count_params(heads) == backbone
  assert models.count_params(heads) == 2 * (512 * 19 + 19)


@pytest.mark.parametrize('branches', [2, 4])
def test_deeplab_param_count_holds_all_branches(branches):
  variables = models.abstract_variables('deeplabv2_r101', aspp_branches=branches)
  assert models.count_params(variables) == 44_601_560
  assert sorted(variables['params']['aux_head']) == [f'branch{i}' for i in range(4)]
  assert variables['params']['aux_head']['branch3']['kernel'].shape == (3, 3, 1024, 19)
  assert variables['params']['main_head']['branch0']['kernel'].shape == (3, 3, 2048, 19)


def test_discriminator_param_count_and_no_batch_stats():
  variables = models.abstract_variables('fc_discriminator')
  assert models.count_params(variables) == 2_781_121
  assert set(variables) == {'params'}


def test_width_scales_channels():
  variables = models.abstract_variables('drn_d_22', width=0.25)
  assert variables['params']['layer0']['conv0']['kernel'].shape == (7, 7, 3, 4)
  assert variables['params']['seg_main']['kernel'].shape == (1, 1, 128, 19)
  tiny = models.abstract_variables('drn_d_22', width=0.01)
  assert tiny['params']['layer1']['conv0']['kernel'].shape == (3, 3, 1, 1)


def test_registry_errors():
  with pytest.raises(ValueError, match='valid: drn_d_22, drn_d_38, deeplabv2_r101'):
    models.create_model('resnet50')
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['aspp_branches'\]"):
    models.create_model('drn_d_22', aspp_branches=2)
  assert models.create_model('drn_d_22').aux_tap == 'layer6'
  assert models.create_model('drn_d_38').aux_tap == 'layer7'
  assert models.create_model('deeplabv2_r101').freeze_bn_affine
  assert models.create_model('drn_d_22', dtype='bfloat16').dtype == jnp.bfloat16


# ------------------------------------------------------------------------------ shapes

@pytest.mark.parametrize('h, w', [(64, 128), (61, 93), (1, 1), (17, 250)])
def test_drn_output_stride_8(h, w):
  out = _shapes('drn_d_22', (2, h, w, 3), width=0.125, return_features=True)
  hw = (math.ceil(h / 8), math.ceil(w / 8))
  assert out['aux'] == out['main'] == (2, *hw, 19)
  assert out['aux_features'] == (2, *hw, 64)  # layer6 at width 1/8.
  assert out['main_features'] == (2, *hw, 64)


@pytest.mark.parametrize('h, w, fh, fw', [
    (65, 65, 9, 9), (512, 1024, 65, 129), (720, 1280, 91, 161)])
def test_deeplab_feature_sizes(h, w, fh, fw):
  out = _shapes('deeplabv2_r101', (1, h, w, 3), return_features=True)
  assert out['aux'] == out['main'] == (1, fh, fw, 19)
  assert out['aux_features'] == (1, fh, fw, 1024)
  assert out['main_features'] == (1, fh, fw, 2048)


def test_discriminator_output_stride_32():
  assert _shapes('fc_discriminator', (1, 720, 1280, 19)) == (1, 22, 40, 1)
  assert _shapes('fc_discriminator', (2, 512, 1024, 19), ndf=8) == (2, 16, 32, 1)


def test_bfloat16_compute_keeps_float32_params_and_stats():
  model = models.create_model('drn_d_22', width=0.0625, dtype='bfloat16')
  x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  out, updated = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']), variables, x)
  assert out['main'].dtype == jnp.bfloat16
  leaves = jax.tree.leaves(variables) + jax.tree.leaves(updated)
  assert all(leaf.dtype == jnp.float32 for leaf in leaves)


@pytest.mark.slow
@pytest.mark.parametrize('name, options, compare_gradients', [
    ('drn_d_22', {'width': 0.0625}, True),
    ('deeplabv2_r101', {}, False),  # Compiling R101's gradient twice costs minutes on CPU.
])
def test_remat_keeps_variables_and_gradients_and_recomputes(name, options, compare_gradients):
  plain = models.create_model(name, 5, **options)
  remat = models.create_model(name, 5, remat=True, **options)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 40, 48, 3))
  variables = (networks.init_variables(plain, jax.random.PRNGKey(1)) if compare_gradients
               else jax.eval_shape(plain.init, jax.random.PRNGKey(1), x))
  assert (jax.tree.structure(jax.eval_shape(remat.init, jax.random.PRNGKey(1), x))
          == jax.tree.structure(variables))

  def loss(params, batch_stats, model):
    out, stats = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                             mutable=['batch_stats'])
    return jnp.mean(out['main'] ** 2) + jnp.mean(out['aux'] ** 2), stats

  grad_fn = lambda model: jax.jit(jax.grad(functools.partial(loss, model=model), has_aux=True))
  args = (variables['params'], variables['batch_stats'])
  # The backward pass recomputes the blocks' convolutions rather than storing their outputs.
  count = lambda model: grad_fn(model).lower(*args).as_text().count('stablehlo.convolution')
  assert count(remat) > count(plain)
  if compare_gradients:
    expected, got = (grad_fn(m)(*args) for m in (plain, remat))
    # The absolute tolerance is relative to the whole gradient, not to each leaf: some leaves are
    # float32 rounding noise of large cancelling sums, e.g. the one-channel layer0 BN scale, whose
    # exact gradient is ~2e-11 (the next train-mode BN makes the loss scale-invariant up to its
    # epsilon) and whose float32 value is ~1e-5 in any summation order (tree scale: ~22).
    scale = max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(expected))
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * scale)


# ------------------------------------------------------------------------------ resize

@pytest.mark.parametrize('in_hw, out_hw', [
    ((9, 17), (65, 129)), ((65, 65), (512, 512)), ((64, 128), (9, 17)), ((7, 5), (3, 11)),
    ((1, 4), (5, 1)), ((6, 6), (1, 1))])
def test_resize_align_corners_matches_torch(in_hw, out_hw, torch):
  x = np.random.default_rng(0).normal(size=(2, 3, *in_hw)).astype(np.float32)
  ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=out_hw, mode='bilinear',
                                        align_corners=True)
  out = layers.resize_align_corners(jnp.asarray(x.transpose(0, 2, 3, 1)), out_hw)
  assert out.shape == (2, *out_hw, 3) and out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), _nhwc(ref), atol=1e-6, rtol=0)


def test_resize_align_corners_keeps_dtype_and_is_differentiable():
  x = jnp.ones((1, 4, 4, 2), jnp.bfloat16)
  assert layers.resize_align_corners(x, (8, 8)).dtype == jnp.bfloat16
  # Bilinear weights of each output pixel sum to 1, so the gradient of the sum is the count of
  # output pixels spread over the inputs: it must total H * W * C.
  grad = jax.grad(lambda v: layers.resize_align_corners(v, (13, 7)).sum())(jnp.ones((1, 5, 3, 2)))
  np.testing.assert_allclose(float(grad.sum()), 13 * 7 * 2, rtol=1e-6)


@pytest.mark.parametrize('in_size,out_size', [(5, 33), (9, 65), (128, 1024), (64, 1)])
def test_align_corners_matrix_of_symbolic_sizes_equals_the_numpy_one(in_size, out_size):
  # The on-device construction used under jax.export's symbolic shapes; here with concrete sizes.
  traced = jax.jit(layers._traced_align_corners_matrix, static_argnums=(0, 1, 2))(
      in_size, out_size, jnp.float32)
  np.testing.assert_array_equal(np.asarray(traced),
                                layers._align_corners_matrix(in_size, out_size))


# ------------------------------------------------------------------------------ BatchNorm

def test_batchnorm_matches_torch_train_and_eval(torch):
  from dakd_jax.torch_ref import models as R  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(1).normal(2.0, 3.0, size=(3, 6, 5, 4)).astype(np.float32)
  ref_bn = torch.nn.BatchNorm2d(6)
  R.randomize_batchnorm_(ref_bn, seed=3)
  variables = {'params': {'scale': ref_bn.weight.detach().numpy(),
                          'bias': ref_bn.bias.detach().numpy()},
               'batch_stats': {'mean': ref_bn.running_mean.numpy().copy(),
                               'var': ref_bn.running_var.numpy().copy()}}
  bn = layers.BatchNorm()
  xj = jnp.asarray(x.transpose(0, 2, 3, 1))
  ref_bn.eval()
  np.testing.assert_allclose(bn.apply(variables, xj, False),
                             _nhwc(ref_bn(torch.from_numpy(x))), atol=1e-5)
  ref_bn.train()
  out, updated = bn.apply(variables, xj, True, mutable=['batch_stats'])
  np.testing.assert_allclose(out, _nhwc(ref_bn(torch.from_numpy(x))), atol=1e-5)
  # torch updates running_var with the unbiased variance (count 60 -> factor 60/59).
  np.testing.assert_allclose(updated['batch_stats']['var'], ref_bn.running_var.numpy(), rtol=1e-5)
  np.testing.assert_allclose(updated['batch_stats']['mean'], ref_bn.running_mean.numpy(),
                             rtol=1e-5, atol=1e-6)


def test_batchnorm_frozen_affine_has_zero_gradient():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 5))
  for frozen in (False, True):
    bn = layers.BatchNorm(freeze_affine=frozen)
    variables = bn.init(jax.random.PRNGKey(0), x, True)
    loss = lambda p: jnp.sum(bn.apply({**variables, 'params': p}, x, True,
                                      mutable=['batch_stats'])[0] * x)
    grads = jax.jit(jax.grad(loss))(variables['params'])
    assert (float(jnp.abs(grads['scale']).sum()) == 0.0) == frozen


def test_batchnorm_groups_normalise_each_sub_batch_on_its_own():
  """`groups` = per-device statistics: each consecutive sub-batch is its own BatchNorm batch."""
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 3, 2, 4)) * 2.0 + 1.0
  variables = layers.BatchNorm().init(jax.random.PRNGKey(0), x, True)
  apply = lambda groups, x: layers.BatchNorm(groups=groups).apply(
      variables, x, True, mutable=['batch_stats'])
  out, stats = apply(4, x)
  parts = [apply(1, x[2 * i:2 * i + 2]) for i in range(4)]
  np.testing.assert_allclose(out, jnp.concatenate([p[0] for p in parts]), atol=1e-6)
  for name in ('mean', 'var'):  # Running statistics move towards the groups' average.
    np.testing.assert_allclose(stats['batch_stats'][name],
                               np.mean([p[1]['batch_stats'][name] for p in parts], axis=0),
                               rtol=1e-6, atol=1e-7)
  assert not np.allclose(out, apply(1, x)[0], atol=1e-3)  # Global statistics differ.
  with pytest.raises(ValueError, match='not divisible into 3 statistics groups'):
    apply(3, x)


def test_network_bn_groups_equal_separate_forwards():
  model = lambda groups: models.create_model('drn_d_22', width=1 / 16, bn_groups=groups)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 24, 32, 3))
  variables = networks.init_variables(model(1), jax.random.PRNGKey(1))
  forward = lambda groups, x: jax.jit(functools.partial(
      model(groups).apply, train=True, mutable=['batch_stats']))(variables, x)[0]['main']
  np.testing.assert_allclose(forward(2, x), jnp.concatenate([forward(1, x[:2]),
                                                             forward(1, x[2:])]), atol=1e-5)


def test_batchnorm_statistics_are_global_under_sharded_jit():
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  x = jax.random.normal(jax.random.PRNGKey(0), (jax.device_count(), 3, 2, 4)) * 2.0 + 1.0
  bn = layers.BatchNorm()
  variables = bn.init(jax.random.PRNGKey(0), x, True)
  step = jax.jit(lambda v, x: bn.apply(v, x, True, mutable=['batch_stats']))
  sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.P('data')))
  (out_s, stats_s), (out_1, stats_1) = step(variables, sharded), step(variables, x)
  assert len(sharded.sharding.device_set) == jax.device_count() > 1
  np.testing.assert_allclose(out_s, out_1, atol=1e-6)
  np.testing.assert_allclose(stats_s['batch_stats']['var'], stats_1['batch_stats']['var'],
                             rtol=1e-6)


# ------------------------------------------------------------------------------ forward parity

def _reference(name, seed, **options):
  import torch  # pylint: disable=g-import-not-at-top  (callers take the `torch` fixture)
  from dakd_jax.torch_ref import models as R  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  return R.randomize_batchnorm_(R.create_reference(name, **options), seed)


def _jax_forward(name, variables, x, train, **options):
  model = models.create_model(name, **options)
  if 'batch_stats' not in variables:
    return jax.jit(model.apply)(variables, x), None
  fn = jax.jit(lambda v, x: model.apply(v, x, train=train, mutable=['batch_stats']))
  out, updated = fn(variables, x)
  return out, updated['batch_stats']


def _check_running_stats(ref_model, name, updated, **options):
  expected = convert.torch_to_flax(ref_model.state_dict(), name, **options)['batch_stats']
  errors = jax.tree.map(lambda a, b: _rel(a, b), updated, expected)
  assert max(jax.tree.leaves(errors)) < 1e-5


@pytest.mark.parametrize('name, shape', [('drn_d_22', (1, 3, 60, 92)),
                                         ('drn_d_38', (2, 3, 64, 128))])
@pytest.mark.parametrize('train', [False, True])
def test_drn_parity_with_torch(name, shape, train, torch):
  ref = _reference(name, seed=0)
  variables = convert.torch_to_flax(ref.state_dict(), name)
  x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
  ref.train(train)
  with torch.no_grad():
    ref_aux, ref_main = ref(x)
  out, updated = _jax_forward(name, variables, jnp.asarray(_nhwc(x)), train)
  assert out['main'].shape == (shape[0], math.ceil(shape[2] / 8), math.ceil(shape[3] / 8), 19)
  assert _rel(out['aux'], _nhwc(ref_aux)) < 1e-4
  assert _rel(out['main'], _nhwc(ref_main)) < 1e-4
  if train:
    _check_running_stats(ref, name, updated)


@pytest.mark.parametrize('train', [False, pytest.param(True, marks=pytest.mark.slow)])
def test_deeplab_parity_with_torch(train, torch):
  """AdaptSegNet's 2-branch head. Train-mode BN on a 1-image 65x65 batch is ill-conditioned:
  torch float32 itself is ~1e-4..4e-4 (relative) away from torch float64 there, so in train mode
  JAX is held to the float64 answer with torch float32's own error as the yardstick."""
  opts = {'aspp_branches': 2}
  ref = _reference('deeplabv2_r101', seed=0, **opts)
  variables = convert.torch_to_flax(ref.state_dict(), 'deeplabv2_r101', **opts)
  x = torch.randn(1, 3, 65, 65, generator=torch.Generator().manual_seed(1))
  ref64 = copy.deepcopy(ref).double().train(train) if train else None
  ref.train(train)
  with torch.no_grad():
    refs32 = ref(x)
    refs64 = ref64(x.double()) if train else None
  out, updated = _jax_forward('deeplabv2_r101', variables, jnp.asarray(_nhwc(x)), train, **opts)
  for i, key in enumerate(('aux', 'main')):
    assert out[key].shape == (1, 9, 9, 19)
    if train:
      truth = _nhwc(refs64[i])
      assert _rel(out[key], truth) <= 2 * _rel(_nhwc(refs32[i]), truth) + 1e-5
      assert _rel(out[key], _nhwc(refs32[i])) < 1e-3
    else:
      assert _rel(out[key], _nhwc(refs32[i])) < 1e-4
  if train:
    _check_running_stats(ref, 'deeplabv2_r101', updated, **opts)


def test_deeplab_aspp_branch_count_changes_output():
  """2 vs 4 live branches differ exactly by the d=18 and d=24 convs' contribution."""
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 5, 8))
  variables = ASPPHead(3, 2).init(jax.random.PRNGKey(1), x)
  assert len(variables['params']) == 4

  @jax.jit
  def difference(variables, x):
    two, four = ASPPHead(3, 2).apply(variables, x), ASPPHead(3, 4).apply(variables, x)
    branch = lambda i, d: layers.conv2d(3, 3, dilation=d, use_bias=True).apply(
        {'params': variables['params'][f'branch{i}']}, x)
    return four - two, branch(2, 18) + branch(3, 24)

  np.testing.assert_allclose(*difference(variables, x), atol=1e-5)


def test_discriminator_parity_with_torch(torch):
  from dakd_jax.torch_ref import models as R  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  ref = R.FCDiscriminator(num_classes=5, ndf=8)
  variables = convert.torch_to_flax(ref.state_dict(), 'fc_discriminator', num_classes=5, ndf=8)
  x = torch.randn(2, 5, 70, 100)
  with torch.no_grad():
    expected = _nhwc(ref(x))
  out, _ = _jax_forward('fc_discriminator', variables, jnp.asarray(_nhwc(x)), False, ndf=8)
  assert out.shape == expected.shape == (2, 2, 3, 1)
  assert _rel(out, expected) < 1e-5


def test_drn_reference_log_probs_are_upsampled_log_softmax(torch):
  ref = _reference('drn_d_22', seed=0, width=0.125).eval()
  x = torch.randn(1, 3, 24, 40)
  with torch.no_grad():
    aux, main = ref.log_probs(x)
    logits_main = ref(x)[1]
  assert aux.shape == main.shape == (1, 19, 24, 40)
  np.testing.assert_allclose(main.exp().sum(1).numpy(), 1.0, rtol=1e-5)
  up = layers.resize_align_corners(jnp.asarray(_nhwc(logits_main)), (24, 40))
  np.testing.assert_allclose(jax.nn.log_softmax(up, -1), _nhwc(main), atol=1e-5)

