"""DiGA's networks: parameter counts, optimiser groups, conversion and parity with the references."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dakd_jax import models
from dakd_jax.tools import convert

SEG = 'diga_deeplabv2_r101'


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _rel(a, ref):
  return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / np.max(np.abs(ref)))


def test_segmentation_param_counts_groups_and_shapes():
  """65,063,568 parameters (head 22,563,408); body BN affine frozen (official requires_grad=False),
  head GroupNorm trained x10; 512x896 -> 65x113 logits and 256-d features."""
  model = models.create_model(SEG, num_classes=19, return_features=True)
  x = jax.ShapeDtypeStruct((2, 512, 896, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  assert models.count_params(variables) == 65_063_568
  assert models.head_modules(SEG) == ('head',)
  assert models.count_params(variables['params']['head']) == 22_563_408
  groups = models.parameter_groups(model, variables['params'])
  assert groups['bn1']['scale'] == groups['layer3']['block5']['bn2']['bias'] == models.FROZEN
  assert groups['layer4']['block0']['conv1']['kernel'] == models.BODY
  head = jax.tree.leaves(groups['head'])
  assert set(head) == {models.HEAD} and len(head) == 29
  shapes = jax.eval_shape(model.apply, variables, x)
  assert shapes['main'].shape == (2, 65, 113, 19) and shapes['features'].shape == (2, 65, 113, 256)


@pytest.mark.slow
def test_head_dropout_drops_whole_channels():
  from dakd_jax.models.diga import ProDAHead  # pylint: disable=g-import-not-at-top
  head = ProDAHead(3, dropout_rate=0.5)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 5, 16))
  variables = jax.jit(head.init, static_argnums=2)(jax.random.PRNGKey(1), x, False)
  apply = jax.jit(lambda x, train: head.apply(variables, x, train, rngs={
      'dropout': jax.random.PRNGKey(2)})[1], static_argnums=1)
  clean, dropped = apply(x, False), apply(x, True)
  kept = np.all(np.asarray(dropped) != 0, axis=(1, 2))  # [N, C]: per image and channel.
  assert np.all(np.all(np.asarray(dropped) == 0, axis=(1, 2)) | kept)
  assert 0.3 < kept.mean() < 0.7
  np.testing.assert_allclose(np.asarray(dropped)[kept.nonzero()[0], :, :, kept.nonzero()[1]],
                             2 * np.asarray(clean)[kept.nonzero()[0], :, :, kept.nonzero()[1]],
                             rtol=1e-5, atol=1e-6)


def _reference(torch, num_classes=19, dropout_rate=0.1):
  from dakd_jax.torch_ref import diga as D  # pylint: disable=g-import-not-at-top
  from dakd_jax.torch_ref import models as R  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  ref = D.SegModel(num_classes, dropout_rate)
  return D.randomize_groupnorm_(R.randomize_batchnorm_(ref, 0), 1)


@pytest.mark.slow
def test_segmentation_conversion_and_parity_with_torch(torch):
  """The official keys convert (Linear weights transposed), bad key sets are refused in one
  error, and the forward matches: eval mode (running statistics, dropout off) and train mode
  (batch statistics; dropout 0 in both), against float64 torch with torch float32's own error
  as the yardstick."""
  ref = _reference(torch, dropout_rate=0.0)
  state = ref.state_dict()
  assert {'layer0.0.weight', 'layer0.1.running_var', 'final.conv2d_list.4.1.weight',
          'final.bottleneck.0.se.2.weight', 'final.bottleneck.2.bias',
          'final.head.1.weight'} <= set(state)
  variables = convert.torch_to_flax(state, SEG)
  assert models.count_params(variables) == 65_063_568
  np.testing.assert_array_equal(variables['params']['head']['se']['fc1']['kernel'],
                                state['final.bottleneck.0.se.0.weight'].numpy().T)
  bad = {**state, 'final.extra.weight': state['final.head.1.weight']}
  del bad['final.conv2d_list.2.0.bias']
  with pytest.raises(ValueError, match=r"missing keys \['final.conv2d_list.2.0.bias'\]; "
                     r"unexpected keys \['final.extra.weight'\]"):
    convert.torch_to_flax(bad, SEG)

  x = torch.randn(2, 3, 65, 81, generator=torch.Generator().manual_seed(1))
  model = models.create_model(SEG, return_features=True, dropout_rate=0.0)
  forward = jax.jit(lambda v, x, train: model.apply(v, x, train=train, mutable=['batch_stats']),
                    static_argnums=2)
  for train in (False, True):
    ref.train(train)
    ref64 = copy.deepcopy(ref).double()
    with torch.no_grad():
      _, _, logits32, feat32 = ref(x)
      _, _, logits64, feat64 = ref64(x.double())
    out, _ = forward(variables, jnp.asarray(_nhwc(x)), train)
    assert out['main'].shape == (2, 9, 11, 19) and out['features'].shape == (2, 9, 11, 256)
    for key, ref32, truth in (('main', logits32, logits64), ('features', feat32, feat64)):
      assert _rel(out[key], _nhwc(truth)) <= max(1e-4, 2 * _rel(_nhwc(ref32), _nhwc(truth)))


# ------------------------------------------------------------------------------ translator

def test_translator_param_counts():
  params = models.abstract_variables('diga_translator')['params']
  assert sorted(params) == ['decoder', 'encoder']
  assert models.count_params(params['encoder']) == 5_385_856
  assert models.count_params(params['decoder']) == 5_754_243


@pytest.mark.slow
def test_translator_two_file_conversion_and_parity_with_torch(torch, tmp_path):
  """enc_s.pth + dec_s2t.pth convert through the CLI; encoder features and translated images
  match the reference (reflect padding, InstanceNorm, nearest upsampling, tanh)."""
  from dakd_jax import networks  # pylint: disable=g-import-not-at-top
  from dakd_jax.models import diga_translator  # pylint: disable=g-import-not-at-top
  from dakd_jax.torch_ref import diga as D  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  enc, dec = D.ImgEncoder().eval(), D.ImgDecoder().eval()
  assert {'model.0.conv.weight', 'model.3.model.3.model.1.conv.bias'} <= set(enc.state_dict())
  assert {'model.0.model.0.model.0.conv.weight', 'model.2.conv.weight',
          'model.5.conv.bias'} <= set(dec.state_dict())
  torch.save(enc.state_dict(), tmp_path / 'enc_s.pth')
  torch.save(dec.state_dict(), tmp_path / 'dec_s2t.pth')
  convert.main(['--model', 'diga_translator', '--torch-checkpoint', str(tmp_path / 'enc_s.pth'),
                '--decoder-checkpoint', str(tmp_path / 'dec_s2t.pth'),
                '--out', str(tmp_path / 'translator')])
  spec, variables = networks.load_network(str(tmp_path / 'translator'))
  assert spec['arch'] == 'diga_translator'
  x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    features, image = enc(x), dec(enc(x))
  model = models.create_model('diga_translator')
  out = jax.jit(model.apply)(variables, jnp.asarray(_nhwc(x)))
  encoder = diga_translator.TranslatorEncoder()
  encoded = jax.jit(encoder.apply)({'params': variables['params']['encoder']},
                                   jnp.asarray(_nhwc(x)))
  assert out.shape == (2, 32, 48, 3) and encoded.shape == (2, 8, 12, 256)
  assert _rel(encoded, _nhwc(features)) < 1e-4
  assert _rel(out, _nhwc(image)) < 1e-4
  with pytest.raises(SystemExit):  # The decoder file is required with the translator only.
    convert.main(['--model', 'diga_translator', '--torch-checkpoint',
                  str(tmp_path / 'enc_s.pth'), '--out', str(tmp_path / 'bad')])
