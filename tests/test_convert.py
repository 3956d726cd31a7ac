"""PyTorch -> Flax conversion: key sets, layouts, error reporting, and the CLI round trip."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dakd_jax import models
from dakd_jax import networks
from dakd_jax.tools import convert

# Every test converts PyTorch state dicts, so all depend on the `torch` fixture (and its mark).
torch = R = None  # torch and dakd_jax.torch_ref.models, imported by the `reference` fixture.


@pytest.fixture(autouse=True)
def reference(torch):  # pylint: disable=redefined-outer-name
  """Imports torch and the PyTorch reference models for the module's tests and helpers."""
  global R
  from dakd_jax.torch_ref import models as torch_models  # pylint: disable=g-import-not-at-top
  globals()['torch'], R = torch, torch_models


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _disc_state(num_classes=5, ndf=4):
  torch.manual_seed(0)
  return R.FCDiscriminator(num_classes, ndf).state_dict()


def test_conv_kernels_become_hwio_and_values_are_copied():
  state = _disc_state()
  variables = convert.torch_to_flax(state, 'fc_discriminator', num_classes=5, ndf=4)
  assert set(variables) == {'params'}
  kernel = variables['params']['conv1']['kernel']
  np.testing.assert_array_equal(kernel, state['conv1.weight'].numpy().transpose(2, 3, 1, 0))
  assert kernel.shape == (4, 4, 5, 4) and kernel.dtype == np.float32
  np.testing.assert_array_equal(variables['params']['classifier']['bias'],
                                state['classifier.bias'].numpy())
  state['classifier.bias'].add_(1.0)  # In-place torch updates must not leak into the result.
  assert not np.array_equal(variables['params']['classifier']['bias'],
                            state['classifier.bias'].numpy())


def test_all_key_problems_reported_in_one_error():
  state = {k: v.numpy() for k, v in _disc_state().items()}
  del state['conv1.bias']
  state['conv2.weight'] = np.zeros((8, 4, 3, 3), np.float32)
  state['extra.weight'] = np.zeros(3, np.float32)
  with pytest.raises(ValueError) as info:
    convert.torch_to_flax(state, 'fc_discriminator', num_classes=5, ndf=4)
  message = str(info.value)
  assert '\n' not in message
  assert "missing keys ['conv1.bias']" in message
  assert "unexpected keys ['extra.weight']" in message
  assert 'conv2.weight: got (8, 4, 3, 3), expected (8, 4, 4, 4)' in message


@pytest.mark.parametrize('wrap', [
    lambda s: {f'module.{k}': v for k, v in s.items()},
    lambda s: {'state_dict': s, 'epoch': 3},
    lambda s: {'model': {f'module.{k}': v for k, v in s.items()}},
])
def test_prefix_and_wrappers_tolerated(wrap):
  state = _disc_state()
  plain = convert.torch_to_flax(state, 'fc_discriminator', num_classes=5, ndf=4)
  wrapped = convert.torch_to_flax(wrap(state), 'fc_discriminator', num_classes=5, ndf=4)
  jax.tree.map(np.testing.assert_array_equal, wrapped, plain)


def test_dakd_drn_keys_with_dead_upconvs_and_batch_counters():
  torch.manual_seed(0)
  ref = R.DRNSeg('drn_d_22', width=0.125, dead_upconvs=True)
  state = ref.state_dict()
  assert 'up1.weight' in state and 'base.layer3.0.downsample.1.num_batches_tracked' in state
  variables = convert.torch_to_flax(state, 'drn_d_22', width=0.125)
  params, stats = variables['params'], variables['batch_stats']
  np.testing.assert_array_equal(params['seg_main']['kernel'][0, 0],
                                state['seg1.weight'].numpy()[:, :, 0, 0].T)
  np.testing.assert_array_equal(params['seg_aux']['bias'], state['seg2.bias'].numpy())
  np.testing.assert_array_equal(params['layer1']['bn0']['scale'],
                                state['base.layer1.1.weight'].numpy())
  np.testing.assert_array_equal(stats['layer3']['block0']['downsample_bn']['var'],
                                state['base.layer3.0.downsample.1.running_var'].numpy())
  assert models.count_params(variables) == sum(
      v.numel() for k, v in ref.named_parameters() if not k.startswith('up'))


def test_imagenet_drn_keys_drop_fc_and_init_fresh_heads():
  torch.manual_seed(0)
  backbone = R.DRN('drn_d_38', width=0.125).state_dict()
  state = {**backbone, 'fc.weight': torch.zeros(1000, 64, 1, 1), 'fc.bias': torch.zeros(1000)}
  first = convert.torch_to_flax(state, 'drn_d_38', width=0.125, seed=0)
  again = convert.torch_to_flax(state, 'drn_d_38', width=0.125, seed=0)
  other = convert.torch_to_flax(state, 'drn_d_38', width=0.125, seed=1)
  np.testing.assert_array_equal(first['params']['layer7']['conv0']['kernel'],
                                backbone['layer7.0.weight'].numpy().transpose(2, 3, 1, 0))
  for head in ('seg_main', 'seg_aux'):
    assert first['params'][head]['kernel'].shape == (1, 1, 64, 19)
    np.testing.assert_array_equal(first['params'][head]['kernel'],
                                  again['params'][head]['kernel'])
    assert not np.array_equal(first['params'][head]['kernel'], other['params'][head]['kernel'])
  assert not np.array_equal(first['params']['seg_main']['kernel'],
                            first['params']['seg_aux']['kernel'])
  jax.tree.map(np.testing.assert_array_equal, first['batch_stats'], other['batch_stats'])


def test_dakd_drn_without_heads_is_an_error():
  torch.manual_seed(0)
  state = {k: v for k, v in R.DRNSeg('drn_d_22', width=0.125).state_dict().items()
           if not k.startswith('seg1')}
  with pytest.raises(ValueError, match=r"missing keys \['seg1.bias', 'seg1.weight'\]"):
    convert.torch_to_flax(state, 'drn_d_22', width=0.125)


def test_deeplab_two_branches_loads_all_four():
  torch.manual_seed(0)
  state = R.DeepLabMulti(aspp_branches=2).state_dict()
  variables = convert.torch_to_flax(state, 'deeplabv2_r101', aspp_branches=2)
  assert models.count_params(variables) == 44_601_560
  for head, layer in (('aux_head', 'layer5'), ('main_head', 'layer6')):
    for i in range(4):
      np.testing.assert_array_equal(
          variables['params'][head][f'branch{i}']['kernel'],
          state[f'{layer}.conv2d_list.{i}.weight'].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables['batch_stats']['layer3']['block22']['bn3']['mean'],
                                state['layer3.22.bn3.running_mean'].numpy())


def _deeplab_init_state():
  """A state dict shaped like `DeepLab_resnet_pretrained_init-f81d91e8.pth`: the ResNet-101 and a
  21-class (COCO) ASPP on layer4 as `layer5`, everything under `Scale.`."""
  torch.manual_seed(0)
  coco = R.DeepLabMulti(num_classes=21).state_dict()
  renamed = lambda k: 'layer5.' + k[len('layer6.'):] if k.startswith('layer6.') else k
  return {'Scale.' + renamed(k): v for k, v in coco.items() if not k.startswith('layer5.')}


@pytest.mark.slow  # Initialises two ResNet-101s (the heads' fresh draws).
@pytest.mark.parametrize('name', ['deeplabv2_r101', 'diga_deeplabv2_r101'])
def test_deeplab_init_gives_the_backbone_and_the_models_own_fresh_heads(name):
  init = _deeplab_init_state()
  variables = convert.torch_to_flax(init, name, seed=3)
  assert models.count_params(variables) == models.count_params(
      models.abstract_variables(name, 19))
  np.testing.assert_array_equal(variables['params']['conv1']['kernel'],
                                init['Scale.conv1.weight'].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables['batch_stats']['bn1']['var'],
                                init['Scale.bn1.running_var'].numpy())
  np.testing.assert_array_equal(variables['batch_stats']['layer3']['block22']['bn3']['mean'],
                                init['Scale.layer3.22.bn3.running_mean'].numpy())
  fresh = networks.init_variables(models.create_model(name, 19), jax.random.PRNGKey(3))
  for head in models.head_modules(name):  # No COCO weight reaches a head.
    for a, b in zip(jax.tree.leaves(variables['params'][head]),
                    jax.tree.leaves(fresh['params'][head]), strict=True):
      np.testing.assert_array_equal(a, np.asarray(b))
  with pytest.raises(ValueError, match='a DeepLab init .Scale.. keys. converts into one of'):
    convert.torch_to_flax(init, 'drn_d_22')


def test_cli_round_trip(tmp_path):
  torch.manual_seed(0)
  ref = R.randomize_batchnorm_(R.DRNSeg('drn_d_22', width=0.125, aux_tap='layer7'), seed=2)
  path = tmp_path / 'student.pth'
  torch.save(ref.state_dict(), path)
  out = tmp_path / 'converted'
  convert.main(['--model', 'drn_d_22', '--torch-checkpoint', str(path), '--out', str(out),
                '--width', '0.125', '--aux-tap', 'layer7'])
  # Read back exactly as training reads `--config.student.init`.
  spec, variables = networks.load_network(str(out), expected_arch='drn_d_22')
  assert spec == {'arch': 'drn_d_22', 'num_classes': 19,
                  'options': {'width': 0.125, 'aux_tap': 'layer7'}}
  model = networks.create_segmentation_model(spec)
  assert model.aux_tap == 'layer7' and model.width == 0.125
  x = torch.randn(2, 3, 40, 56)
  with torch.no_grad():
    ref_aux, ref_main = ref.eval()(x)
  result = jax.jit(model.apply)(variables, jnp.asarray(_nhwc(x)))
  np.testing.assert_allclose(result['aux'], _nhwc(ref_aux), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(result['main'], _nhwc(ref_main), rtol=1e-4, atol=1e-4)


def test_cli_refuses_pickled_module_without_trust(tmp_path, capsys):
  torch.manual_seed(0)
  module = R.FCDiscriminator(num_classes=3, ndf=4)
  path = tmp_path / 'snapshot.pth'
  torch.save(module, path)  # A whole pickled nn.Module, like some official snapshots.
  argv = ['--model', 'fc_discriminator', '--torch-checkpoint', str(path), '--out',
          str(tmp_path / 'd'), '--num-classes', '3', '--ndf', '4']
  with pytest.raises(SystemExit) as info:
    convert.main(argv)
  message = capsys.readouterr().err
  assert info.value.code == 2 and message.startswith('error: ')
  assert '--trust-pickle' in message and str(path) in message and message.count('\n') == 1
  assert not os.path.exists(tmp_path / 'd')
  convert.main(argv + ['--trust-pickle'])
  _, variables = networks.load_network(str(tmp_path / 'd'), expected_arch='fc_discriminator')
  np.testing.assert_allclose(variables['params']['conv4']['kernel'],
                             module.conv4.weight.detach().numpy().transpose(2, 3, 1, 0))
  assert 'wrote fc_discriminator' in capsys.readouterr().out


def test_cli_missing_file_is_one_line_error(tmp_path, capsys):
  with pytest.raises(SystemExit) as info:
    convert.main(['--model', 'drn_d_22', '--torch-checkpoint', str(tmp_path / 'nope.pth'),
                  '--out', str(tmp_path / 'o')])
  assert info.value.code == 2 and 'no such checkpoint file' in capsys.readouterr().err


@pytest.mark.parametrize('trust', [False, True])
def test_cli_garbage_file_is_not_a_pickle_question(tmp_path, capsys, trust):
  path = tmp_path / 'garbage.pth'
  path.write_bytes(b'this is not a checkpoint at all' * 10)
  with pytest.raises(SystemExit) as info:
    convert.main(['--model', 'drn_d_22', '--torch-checkpoint', str(path),
                  '--out', str(tmp_path / 'o')] + (['--trust-pickle'] if trust else []))
  message = capsys.readouterr().err
  assert info.value.code == 2 and message.count('\n') == 1
  assert 'not a PyTorch checkpoint that torch.load can read' in message
  assert '--trust-pickle' not in message
