"""MuHDi's 4-head DeepLab-v2: parameter counts, shapes, conversion of MuHDi's and ADVENT's
checkpoints, the official per-step initialisation rules, and forward parity with PyTorch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dakd_jax import models
from dakd_jax.models import muhdi
from dakd_jax.tools import convert

HEADS = {'aux_head': 'layer5', 'main_head': 'layer6', 'aux_specialist_head': 'layer7',
         'main_specialist_head': 'layer8'}


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _rel(a, ref):
  return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize('classes, total', [(19, 46_702_960), (7, 44_048_560)])
def test_param_counts(classes, total):
  variables = models.abstract_variables('muhdi_deeplabv2_r101', classes)
  assert models.count_params(variables) == total
  aspp = lambda channels: 4 * (9 * channels * classes + classes)
  for head, channels in (('aux_specialist_head', 1024), ('main_specialist_head', 2048)):
    assert models.count_params(variables['params'][head]) == aspp(channels)
  assert set(models.head_modules('muhdi_deeplabv2_r101')) == set(HEADS)


def test_outputs_at_muhdi_input_size():
  """640x320 inputs (MuHDi's size for every domain): logits and attentions at stride 8 (layer1
  at stride 4), as the official network returns them."""
  model = models.create_model('muhdi_deeplabv2_r101', 7)
  x = jax.ShapeDtypeStruct((2, 320, 640, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  out = jax.tree.map(lambda s: s.shape, jax.eval_shape(model.apply, variables, x))
  for key in ('aux', 'main', 'aux_specialist', 'main_specialist'):
    assert out[key] == (2, 41, 81, 7)
  assert out['attentions'] == [(2, 81, 161, 256), (2, 41, 81, 512), (2, 41, 81, 1024),
                               (2, 41, 81, 2048)]


def test_plain_deeplab_returns_attentions_with_features():
  model = models.create_model('deeplabv2_r101', 7, return_features=True)
  x = jax.ShapeDtypeStruct((1, 65, 65, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  out = jax.tree.map(lambda s: s.shape, jax.eval_shape(model.apply, variables, x))
  assert [s[-1] for s in out['attentions']] == [256, 512, 1024, 2048]
  assert out['attentions'][3] == out['main_features']


def test_width_narrows_every_body_layer_and_keeps_the_heads():
  """`width` (the narrow networks of the synthetic configs) scales the stem and every stage;
  the heads read the narrower maps with the same classes."""
  model = models.create_model('muhdi_deeplabv2_r101', 7, width=0.25)
  x = jax.ShapeDtypeStruct((1, 65, 65, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  out = jax.tree.map(lambda s: s.shape, jax.eval_shape(model.apply, variables, x))
  assert [s[-1] for s in out['attentions']] == [64, 128, 256, 512]
  assert out['main'] == out['aux_specialist'] == (1, 9, 9, 7)
  params = variables['params']
  assert params['conv1']['kernel'].shape == (7, 7, 3, 16)
  assert params['main_head']['branch0']['kernel'].shape == (3, 3, 512, 7)


# ------------------------------------------------------------------ conversion and init rules

def _official_restore(model_state, saved):
  """The loop of the official `muhdi/scripts/train.py` (trained RESTORE_FROM) on state dicts:
  copy every saved key, and write saved layer7 -> layer5 and layer8 -> layer6."""
  new = dict(model_state)
  for key, value in saved.items():
    parts = key.split('.')
    new[key] = value
    if parts[0] in ('layer7', 'layer8'):
      parts[0] = {'layer7': 'layer5', 'layer8': 'layer6'}[parts[0]]
      new['.'.join(parts)] = value
  return new


def _official_old_model(model_state, saved):
  """The official old model: every saved key except the specialist heads layer7/layer8."""
  new = dict(model_state)
  new.update({k: v for k, v in saved.items() if k.split('.')[0] not in ('layer7', 'layer8')})
  return new


def _assert_same(variables, state, name, **options):
  expected = convert.torch_to_flax(state, name, **options)
  jax.tree.map(np.testing.assert_array_equal, variables, expected)


@pytest.fixture(scope='module')
def references():
  """`{name: (state dict, converted variables)}` (7 classes) of an ADVENT network, a trained
  MuHDi one and a fresh MuHDi one; tests taking it carry the `torch` mark."""
  import torch  # pylint: disable=g-import-not-at-top,redefined-outer-name
  from dakd_jax.torch_ref import models as R  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  states = {'advent': R.randomize_batchnorm_(R.DeepLabMulti(7), seed=1).state_dict(),
            'muhdi': R.randomize_batchnorm_(R.DeepLabMuHDi(7), seed=2).state_dict(),
            'fresh': R.DeepLabMuHDi(7).state_dict()}
  arch = lambda name: 'deeplabv2_r101' if name == 'advent' else 'muhdi_deeplabv2_r101'
  return {name: (state, convert.torch_to_flax(state, arch(name), num_classes=7))
          for name, state in states.items()}


@pytest.mark.slow  # Each conversion traces R101's init (~2 s).
@pytest.mark.torch
def test_convert_muhdi_and_advent_checkpoints(references):
  (advent, plain), (muhdi_prev, variables) = references['advent'], references['muhdi']
  assert models.count_params(variables) == 44_048_560
  for head, layer in HEADS.items():
    for i in range(4):
      np.testing.assert_array_equal(
          variables['params'][head][f'branch{i}']['kernel'],
          muhdi_prev[f'{layer}.conv2d_list.{i}.weight'].numpy().transpose(2, 3, 1, 0))
      np.testing.assert_array_equal(variables['params'][head][f'branch{i}']['bias'],
                                    muhdi_prev[f'{layer}.conv2d_list.{i}.bias'].numpy())
  np.testing.assert_array_equal(plain['batch_stats']['layer4']['block2']['bn3']['var'],
                                advent['layer4.2.bn3.running_var'].numpy())
  with pytest.raises(ValueError, match='layer7'):  # A 2-head network is not a MuHDi one.
    convert.torch_to_flax(advent, 'muhdi_deeplabv2_r101', num_classes=7)


@pytest.mark.slow  # Each conversion traces R101's init (~2 s).
@pytest.mark.torch
@pytest.mark.parametrize('previous', ['advent', 'muhdi'])
def test_step_initialisation_follows_the_official_loop(references, previous):
  """Step 2 starts from ADVENT (specialist heads stay fresh), step 3 from MuHDi (agnostic heads
  <- old specialist heads); the old model drops the specialist heads."""
  (saved, prev_vars), (fresh, fresh_vars) = references[previous], references['fresh']
  got = muhdi.init_from_previous(prev_vars, fresh_vars)
  _assert_same(got, _official_restore(fresh, saved), 'muhdi_deeplabv2_r101', num_classes=7)
  if previous == 'muhdi':
    np.testing.assert_array_equal(got['params']['main_head']['branch2']['kernel'],
                                  prev_vars['params']['main_specialist_head']['branch2']['kernel'])
  else:
    np.testing.assert_array_equal(got['params']['aux_specialist_head']['branch0']['kernel'],
                                  fresh_vars['params']['aux_specialist_head']['branch0']['kernel'])
  old = muhdi.previous_model_variables(prev_vars)
  plain_fresh = {k: v for k, v in fresh.items() if k.split('.')[0] not in ('layer7', 'layer8')}
  _assert_same(old, _official_old_model(plain_fresh, saved), 'deeplabv2_r101', num_classes=7)


@pytest.mark.slow  # Each conversion traces R101's init (~2 s).
@pytest.mark.torch
def test_initialisation_rejects_other_classes(references):
  prev = references['advent'][1]
  fresh19 = jax.tree.map(np.zeros_like,
                         models.abstract_variables('muhdi_deeplabv2_r101', 19))
  with pytest.raises(ValueError, match='num_classes'):
    muhdi.init_from_previous(prev, fresh19)


# ------------------------------------------------------------------------------ forward parity

@pytest.mark.slow
def test_forward_parity_with_torch(torch):
  """Converted weights, eval-mode BN: all four heads and the four attentions below 1e-4."""
  from dakd_jax.torch_ref import models as R  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  ref = R.randomize_batchnorm_(R.DeepLabMuHDi(7), seed=3).eval()
  with torch.no_grad():  # Make the specialist heads differ visibly from the agnostic ones.
    for conv in ref.layer8.conv2d_list:
      conv.bias.add_(0.5)
  variables = convert.torch_to_flax(ref.state_dict(), 'muhdi_deeplabv2_r101', num_classes=7)
  x = torch.randn(1, 3, 65, 97, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    *logits, attentions = ref(x)
  model = models.create_model('muhdi_deeplabv2_r101', 7)
  out = jax.jit(model.apply)(variables, jnp.asarray(_nhwc(x)))
  for key, want in zip(('aux', 'main', 'aux_specialist', 'main_specialist'), logits):
    assert out[key].shape == (1, 9, 13, 7)
    assert _rel(out[key], _nhwc(want)) < 1e-4, key
  assert not np.allclose(out['main'], out['main_specialist'])
  for got, want in zip(out['attentions'], attentions):
    assert float(np.min(got)) >= 0.0  # Post-ReLU, as the official in-place ReLU returns.
    assert _rel(got, _nhwc(want)) < 1e-4
