"""DiGA's translator stage: the discriminator, VGG-19 and losses against PyTorch references
written from the official code (float64), parameter counts, the players-first step, and the tiny
stage trained and resumed."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dakd_jax import experiment
from dakd_jax import methods
from dakd_jax import models
from dakd_jax import sharding
from dakd_jax import stages as stages_lib
from dakd_jax import steps
from dakd_jax import train as train_lib
from dakd_jax import translator_losses as tl
from dakd_jax.methods import base
from dakd_jax.tools import benchmark
from dakd_jax.tools import convert


def _nhwc(t):
  return np.ascontiguousarray(t.detach().numpy().transpose(0, 2, 3, 1))


def _nchw(x, torch, grad=False):
  t = torch.tensor(np.asarray(x, np.float64).transpose(0, 3, 1, 2))
  return t.requires_grad_(grad)


def _rel(a, ref):
  ref = np.asarray(ref, np.float64)
  return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / np.max(np.abs(ref)))


def _images(seed, shape):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _labels(seed, shape, num_classes=5):
  labels = np.random.default_rng(seed).integers(0, num_classes, shape)
  labels[:, :shape[1] // 4, : shape[2] // 3] = 255  # An ignored block: its border is an edge too.
  labels[:, shape[1] // 2:] = np.maximum(labels[:, shape[1] // 2:], 3)  # Some flat regions.
  return labels.astype(np.int32)


def _discriminator_params(state_dict):
  """The reference discriminator's weights as `multiscale_image_discriminator` params."""
  kernel = lambda w: jnp.asarray(w.detach().numpy().transpose(2, 3, 1, 0), jnp.float32)
  params = {}
  for s in range(3):
    scale = {f'conv{i}': {'kernel': kernel(state_dict[f'cnns.{s}.{i}.conv.weight'])}
             for i in range(4)}
    scale['score'] = {'kernel': kernel(state_dict[f'cnns.{s}.4.weight']),
                      'bias': jnp.asarray(state_dict[f'cnns.{s}.4.bias'].detach().numpy(),
                                          jnp.float32)}
    params[f'scale{s}'] = scale
  return {'params': params}


# ------------------------------------------------------------------------------------- networks

def test_parameter_counts():
  """Discriminator 8,268,291 (3 x 2,756,097: 3*64*16 + 64*128*16 + 128*256*16 + 256*512*16 +
  513, no conv bias but the last); VGG-19 to conv5_1 12,944,960; the four translator halves
  2 x (5,385,856 + 5,754,243)."""
  d = models.abstract_variables('multiscale_image_discriminator')['params']
  assert models.count_params(d) == 8_268_291 == 3 * 2_756_097
  assert models.count_params(d['scale1']) == 2_756_097
  assert models.count_params(models.abstract_variables('vgg19_features')) == 12_944_960
  cycle = models.abstract_variables('diga_cycle_translator')['params']
  assert sorted(cycle) == ['decoder', 'encoder', 'source_decoder', 'target_encoder']
  assert models.count_params(cycle['target_encoder']) == 5_385_856
  assert models.count_params(cycle['source_decoder']) == 5_754_243
  assert models.count_params(cycle) == 2 * (5_385_856 + 5_754_243)
  for name in ('diga_cycle_translator', 'multiscale_image_discriminator', 'vgg19_features'):
    assert name not in models.SEGMENTATION_NETWORKS


def test_discriminator_matches_torch(torch):
  """Scores at every scale and the input gradient of their squares, against the reference
  (count-excluding average pooling on odd sizes)."""
  from dakd_jax.torch_ref import diga_translator as R  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  ref = R.Discriminator().double()
  assert sum(p.numel() for p in ref.parameters()) == 8_268_291
  x = _images(1, (2, 70, 90, 3))
  xt = _nchw(x, torch, grad=True)
  maps = ref(xt)
  sum(torch.sum(m ** 2) for m in maps).backward()
  model = models.create_model('multiscale_image_discriminator')
  variables = _discriminator_params(ref.state_dict())

  def squares(x, variables):
    out = model.apply(variables, x)
    return sum(jnp.sum(m ** 2) for m in out), out

  (_, out), grad = jax.jit(jax.value_and_grad(squares, has_aux=True))(jnp.asarray(x), variables)
  assert [o.shape for o in out] == [(2, 4, 5, 1), (2, 2, 2, 1), (2, 1, 1, 1)]
  for a, b in zip(out, maps):
    assert _rel(a, _nhwc(b)) < 1e-4
  assert _rel(grad, _nhwc(xt.grad)) < 1e-4


def test_vgg_converts_from_torchvision_keys_and_matches_torch(torch):
  """A torchvision-layout VGG-19 state dict (with the later convs and the classifier, dropped)
  converts; the five ReLU maps match the official slices."""
  from dakd_jax.torch_ref import diga_translator as R  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  ref = R.Vgg19().double()
  state = dict(ref.state_dict())
  for index in (30, 32, 34):  # What torchvision's full vgg19 also holds.
    state[f'features.{index}.weight'] = torch.zeros(512, 512, 3, 3)
    state[f'features.{index}.bias'] = torch.zeros(512)
  for index, shape in ((0, (4096, 25088)), (3, (4096, 4096)), (6, (1000, 4096))):
    state[f'classifier.{index}.weight'] = torch.zeros(shape)
    state[f'classifier.{index}.bias'] = torch.zeros(shape[0])
  variables = convert.torch_to_flax(state, 'vgg19_features')
  with pytest.raises(ValueError, match='unexpected keys'):
    convert.torch_to_flax({**state, 'features.36.weight': torch.zeros(1)}, 'vgg19_features')
  x = _images(2, (1, 34, 50, 3))
  with torch.no_grad():
    expected = ref(_nchw(x, torch))
  got = jax.jit(models.create_model('vgg19_features').apply)(variables, jnp.asarray(x))
  assert [g.shape[1:] for g in got] == [(34, 50, 64), (17, 25, 128), (8, 12, 256), (4, 6, 512),
                                         (2, 3, 512)]
  for a, b in zip(got, expected):
    assert _rel(a, _nhwc(b)) < 1e-4


# --------------------------------------------------------------------------------------- losses

def test_lsgan_losses_match_torch(torch):
  from dakd_jax.torch_ref import diga_translator as R  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  real = [rng.normal(size=(2, s, s + 1, 1)) for s in (8, 4, 2)]
  fake = [rng.normal(size=(2, s, s + 1, 1)) for s in (8, 4, 2)]
  tr = [_nchw(r, torch, grad=True) for r in real]
  tf = [_nchw(f, torch, grad=True) for f in fake]
  d_ref, g_ref = R.lsgan_discriminator_loss(tr, tf), R.lsgan_generator_loss(tf)
  (d_ref + g_ref).backward()
  cast = lambda maps: [jnp.asarray(m, jnp.float32) for m in maps]
  d, (grad_real, grad_fake) = jax.value_and_grad(tl.lsgan_discriminator_loss, (0, 1))(
      cast(real), cast(fake))
  g, grad_gen = jax.value_and_grad(tl.lsgan_generator_loss)(cast(fake))
  np.testing.assert_allclose(d, d_ref.item(), rtol=1e-5)
  np.testing.assert_allclose(g, g_ref.item(), rtol=1e-5)
  for a, b in zip(grad_real, tr):
    np.testing.assert_allclose(a, _nhwc(b.grad), rtol=1e-4, atol=1e-7)
  for a, c, b in zip(grad_fake, grad_gen, tf):
    np.testing.assert_allclose(a + c, _nhwc(b.grad), rtol=1e-4, atol=1e-7)


def test_semantic_edge_loss_matches_torch(torch):
  """kornia's normalised 5x5 Laplacian with reflect padding on the labels (255 included),
  |response| > 0.1; L1 on the masked images over every element: value and gradient."""
  from dakd_jax.torch_ref import diga_translator as R  # pylint: disable=g-import-not-at-top
  shape = (2, 20, 28)
  labels = _labels(4, shape)
  source, translated = _images(5, shape + (3,)), _images(6, shape + (3,))
  lap_ref = R.laplacian(torch.tensor(labels, dtype=torch.float64)[:, None])
  np.testing.assert_allclose(tl.laplacian(jnp.asarray(labels, jnp.float32)[..., None])[..., 0],
                             lap_ref[:, 0].numpy(), rtol=1e-5, atol=1e-4)
  edges = np.asarray(tl.semantic_edges(jnp.asarray(labels)))
  assert 0.05 < edges.mean() < 0.95  # Neither empty nor everything.
  np.testing.assert_array_equal(edges, (np.abs(lap_ref[:, 0].numpy()) > 0.1).astype(np.float32))
  out = _nchw(translated, torch, grad=True)
  loss_ref = R.seg_edge_loss(out, _nchw(source, torch), torch.tensor(labels, dtype=torch.long))
  loss_ref.backward()
  loss, grad = jax.value_and_grad(tl.semantic_edge_loss)(
      jnp.asarray(translated), jnp.asarray(source), jnp.asarray(labels))
  np.testing.assert_allclose(loss, loss_ref.item(), rtol=1e-5)
  np.testing.assert_allclose(grad, _nhwc(out.grad), rtol=1e-4, atol=1e-9)


def test_perceptual_loss_halves_wide_images_like_torch(torch):
  """`VGGLoss`'s 2x2 average pooling while the width exceeds 1024 (2100 -> 1050 -> 525), with
  the identity as the feature extractor so the pooling alone is compared."""
  from dakd_jax.torch_ref import diga_translator as R  # pylint: disable=g-import-not-at-top
  x, y = _images(7, (1, 5, 2100, 3)), _images(8, (1, 5, 2100, 3))
  weights = (0.5, 2.0)
  xt = _nchw(x, torch, grad=True)
  ref = R.vgg_loss(lambda v: [v, v * v], xt, _nchw(y, torch), weights)
  ref.backward()
  loss, grad = jax.value_and_grad(tl.perceptual_loss, 1)(
      lambda v: (v, v * v), jnp.asarray(x), jnp.asarray(y), weights)
  assert tl.halve_while_wider(jnp.zeros((1, 5, 2100, 3))).shape == (1, 1, 525, 3)
  np.testing.assert_allclose(loss, ref.item(), rtol=1e-5)
  np.testing.assert_allclose(grad, _nhwc(xt.grad), rtol=1e-4, atol=1e-9)


def test_translator_terms_sum_to_the_official_total(torch):
  """The method's terms, given the translator's images, sum to the script's `total_loss` (VGG
  perceptual term included), and their gradient with respect to every image matches."""
  from dakd_jax.torch_ref import diga_translator as R  # pylint: disable=g-import-not-at-top
  torch.manual_seed(1)
  method = methods.create('diga_translator', {'d_width': 8})
  assert method.players_first and method.frozen == ('vgg',)
  shape = (2, 64, 64)
  keys = ('s2t', 't2s', 'source_self', 'target_self', 'source_cycle', 'target_cycle')
  images = {k: _images(10 + i, shape + (3,)) for i, k in enumerate(keys)}
  batch = {'source_image': jnp.asarray(_images(20, shape + (3,))),
           'target_image': jnp.asarray(_images(21, shape + (3,))),
           'source_label': jnp.asarray(_labels(22, shape))}
  dis = {name: R.Discriminator(dim=8).double() for name in ('dis_s2t', 'dis_t2s')}
  vgg = R.Vgg19().double()
  timages = {k: _nchw(v, torch, grad=True) for k, v in images.items()}
  ref = R.generator_loss(timages, _nchw(batch['source_image'], torch),
                         _nchw(batch['target_image'], torch),
                         torch.tensor(np.asarray(batch['source_label']), dtype=torch.long),
                         dis['dis_s2t'], dis['dis_t2s'], vgg)
  ref.backward()
  module = models.create_model('multiscale_image_discriminator', width=8)
  vgg_module = models.create_model('vgg19_features')

  def total(images, dis_variables, vgg_variables):  # Weights as arguments, not constants.
    players = {name: base.PlayerCall(module, v, False) for name, v in dis_variables.items()}
    features = method.frozen_outputs({'vgg': base.FrozenNetwork(vgg_module, vgg_variables)},
                                     batch)
    terms, player_inputs = method.network_terms(images, batch, players, features)
    assert player_inputs == {}
    return sum(terms.values()), terms

  (value, terms), grads = jax.jit(jax.value_and_grad(total, has_aux=True))(
      {k: jnp.asarray(v) for k, v in images.items()},
      {name: _discriminator_params(d.state_dict()) for name, d in dis.items()},
      convert.torch_to_flax(vgg.state_dict(), 'vgg19_features'))
  assert set(terms) == {'src/adv', 'tgt/adv', 'src/cyc', 'tgt/cyc', 'src/seg_edge', 'src/self',
                        'tgt/self', 'src/percep', 'tgt/percep'}
  np.testing.assert_allclose(value, ref.item(), rtol=1e-5)
  for k in keys:
    assert _rel(grads[k], _nhwc(timages[k].grad)) < 1e-4, k
  inputs = method.player_inputs(images, batch, None)
  assert inputs['dis_s2t'][0] is batch['target_image'] and inputs['dis_s2t'][1] is images['s2t']
  assert inputs['dis_t2s'][0] is batch['source_image'] and inputs['dis_t2s'][1] is images['t2s']


# ---------------------------------------------------------------------------------- the stage

def _tiny_translator_stage(**overrides):
  from configs import diga_tiny  # pylint: disable=g-import-not-at-top
  config = diga_tiny.get_config()
  config.update_from_flattened_dict(overrides)
  return benchmark.stage_spec(config, 'translator'), experiment.run_settings(config)


@pytest.mark.slow
def test_step_updates_both_sides_and_takes_the_gradient_through_updated_discriminators():
  """One jitted step: every translator half and both discriminators move, the losses are
  finite, and the translator's gradient is the one through the *updated* discriminators."""
  stage, run = _tiny_translator_stage()
  variables = train_lib.random_variables(stage, run)
  b = train_lib.build_stage(stage, run, variables, mesh=sharding.make_mesh(jax.devices()[:1]))
  step = jax.jit(functools.partial(steps.train_step, program=b.program))  # Not donating.
  batch = {k: v / 128 if k.endswith('image') else v
           for k, v in benchmark.random_batch(stage, 19, 0).items()}
  new, metrics = step(b.state, batch, {})
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert {'loss/dis_s2t', 'loss/dis_t2s', 'loss/src/seg_edge', 'loss/tgt/cyc'} <= set(metrics)
  moved = lambda a, c: float(optax.tree.norm(jax.tree.map(jnp.subtract, a, c))) > 0
  for half in ('encoder', 'decoder', 'target_encoder', 'source_decoder'):
    assert moved(new.network.params[half], b.state.network.params[half]), half
  for name in ('dis_s2t', 'dis_t2s'):
    assert moved(new.players[name].params, b.state.players[name].params), name

  state, method = b.state, stage.method
  key = steps.step_key(state)
  full = {**jax.tree.map(jnp.asarray, batch), 'rng': jax.random.fold_in(key, 2)}
  inputs, context, _ = method.prepare(state, full, None, jax.random.fold_in(key, 0),
                                      b.program.network)

  @jax.jit
  def grad_norm(players):
    loss = lambda p: steps.network_loss(p, state.replace(players=players), b.program, full,
                                        inputs, context, jax.random.fold_in(key, 1))[0]
    return optax.tree.norm(jax.grad(loss)(state.network.params))

  logged, through_new, through_old = (float(v) for v in (
      metrics['grad_norm/network'], grad_norm(new.players), grad_norm(state.players)))
  # Separately compiled float32 programs agree to ~1e-4; the pre-update players differ more.
  assert abs(logged - through_new) < 1e-3 * through_new, (logged, through_new, through_old)
  assert abs(logged - through_new) < 0.1 * abs(logged - through_old), (
      logged, through_new, through_old)


@pytest.mark.slow
def test_tiny_translator_stage_trains_resumes_exactly_and_feeds_the_warmup(
    synthetic_root, tfds_dir, tmp_path, killed_run):
  """The tiny translator stage, killed at step 3 after its step-2 checkpoint and resumed, ends
  where an uninterrupted run does (translator and discriminators); it has no results row, and a
  warm-up stage takes its export as the frozen translator."""
  from configs import diga_tiny  # pylint: disable=g-import-not-at-top

  def config():
    c = diga_tiny.get_config()
    c.roots.gta5 = os.path.join(synthetic_root, 'gta5')
    c.roots.cityscapes = os.path.join(synthetic_root, 'cityscapes')
    c.data_dir = tfds_dir
    c.pipeline = ('translator',)
    c.stages.translator.num_steps = 4
    return c

  straight = str(tmp_path / 'straight')
  assert experiment.run(config(), straight) == {'translator': None}
  with open(os.path.join(straight, experiment.RESULTS_JSON)) as f:
    assert json.load(f) == {}  # No results row.
  resumed = str(tmp_path / 'resumed')
  killed_run(config(), resumed, 3)
  experiment.run(config(), resumed)
  from dakd_jax import networks as networks_lib  # pylint: disable=g-import-not-at-top
  dirs = lambda w: [stages_lib.export_dir(w, 'translator')] + [
      os.path.join(stages_lib.players_dir(w, 'translator'), p) for p in ('dis_s2t', 'dis_t2s')]
  for a_dir, b_dir in zip(dirs(straight), dirs(resumed)):
    (spec, a), (_, b) = (networks_lib.load_network(d) for d in (a_dir, b_dir))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-6)
  assert spec['arch'] == 'multiscale_image_discriminator'

  c = config()
  c.pipeline = ('translator', 'diga_warmup')
  c.stages.diga_warmup.options.translation = 'network'
  c.stages.diga_warmup.frozen.translator = 'stage:translator'
  warmup = stages_lib.plan(c, straight)[1]
  assert warmup.frozen_networks['translator']['arch'] == 'diga_cycle_translator'
  spec, variables = networks_lib.load_network(warmup.frozen['translator'])
  translator = models.create_model(spec['arch'], **spec['options'])
  x = jnp.zeros((1, 32, 64, 3))
  assert translator.apply(variables, x).shape == (1, 32, 64, 3)


def test_gta2cs_translator_stage_has_the_official_settings(tmp_path):
  """`train_domain_translator.py`'s settings; the VGG weights are required while the perceptual
  term is on (one line naming the key) and not once it is off; the warm-up takes the stage's
  translator."""
  from configs import diga_gta2cs  # pylint: disable=g-import-not-at-top
  config = diga_gta2cs.get_config()
  assert config.pipeline[:2] == ('translator', 'warmup')
  stage = config.stages.translator
  assert config.networks[stage.network].arch == 'diga_cycle_translator'
  assert (stage.num_steps, stage.batch_size) == (50_000, 2)
  o = stage.optim
  assert (o.optimizer, o.lr, o.d_lr, o.betas, o.weight_decay, o.power) == (
      'adam', 1e-4, 1e-4, (0.5, 0.999), 0.0, 0.9)
  assert stage.source.augment.crop == stage.target.augment.crop == (512, 896)
  assert stage.source.augment.flip and stage.source.augment.crop_redraws == 5
  assert stage.source.augment.random_scale is None
  method = methods.create(stage.method, stage.options.to_dict())
  assert (method.lambda_adv, method.lambda_cyc, method.lambda_percep, method.lambda_self,
          method.lambda_seg_edge, method.d_width) == (0.5, 10.0, 0.1, 0.001, 20.0, 64)
  assert config.stages.warmup.frozen.translator == 'stage:translator'
  with pytest.raises(Exception, match=r"^config\.stages\.translator\.frozen\.vgg: expected a "
                     "variables directory or 'stage:<name>', got ''$"):
    stages_lib.plan(config, str(tmp_path))
  config.stages.translator.options.lambda_percep = 0.0
  plan = stages_lib.plan(config, str(tmp_path))
  assert plan[0].frozen == {} and plan[1].frozen['translator'].endswith('translator/export')
  vgg_dir = tmp_path / 'vgg19'
  vgg_dir.mkdir()
  (vgg_dir / 'model.json').write_text(
      '{"arch": "vgg19_features", "num_classes": 19, "options": {}}')
  config.vgg19 = str(vgg_dir)
  config.stages.translator.options.lambda_percep = 0.1
  stage = stages_lib.plan(config, str(tmp_path))[0]
  assert stage.frozen == {'vgg': str(vgg_dir)}
  assert stage.frozen_networks['vgg']['arch'] == 'vgg19_features'
