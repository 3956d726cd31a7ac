"""DiGA warm-up: losses, EMA teacher, strong augmentation and CrDoMix masks against references,
and the warm-up stage end to end with exact resume."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dakd_jax import augment
from dakd_jax import experiment
from dakd_jax import losses
from dakd_jax import methods
from dakd_jax import networks as networks_lib
from dakd_jax import stages as stages_lib
from dakd_jax.methods import diga


def _nchw(x):
  return np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))


def _logits(seed, shape=(2, 5, 6, 4)):
  return np.random.default_rng(seed).normal(0, 2, shape).astype(np.float32)


def _labels(seed, shape=(2, 5, 6), num_classes=4):
  labels = np.random.default_rng(seed).integers(0, num_classes, shape)
  labels[:, 0, :3] = 255
  return labels.astype(np.int32)


# ----------------------------------------------------------------------------------- losses

def test_cross_entropy_official_averaging_matches_torch(torch):
  from dakd_jax.torch_ref import diga as D  # pylint: disable=g-import-not-at-top
  logits, labels = _logits(0), _labels(1)
  x = torch.tensor(_nchw(logits), requires_grad=True)
  ref = D.cross_entropy2d(x, torch.tensor(labels, dtype=torch.long))
  ref.backward()
  fn = lambda l: losses.segmentation_cross_entropy(l, labels, average='all')
  value, grad = jax.value_and_grad(fn)(jnp.asarray(logits))
  np.testing.assert_allclose(value, ref.item(), rtol=1e-6)
  np.testing.assert_allclose(_nchw(grad), x.grad.numpy(), atol=1e-7)
  valid = np.mean(labels != 255)  # The default divides by valid pixels only.
  np.testing.assert_allclose(losses.segmentation_cross_entropy(logits, labels) * valid, value,
                             rtol=1e-6)


@pytest.mark.parametrize('min_kept', [5, 50, 1000])  # Threshold 0.7; from the ranking; the top.
def test_ohem_cross_entropy_matches_the_synthia_scripts(min_kept, torch):
  from dakd_jax.torch_ref import diga as D  # pylint: disable=g-import-not-at-top
  logits, labels = _logits(5, (2, 5, 6, 4)) * 0.7, _labels(6)
  x = torch.tensor(_nchw(logits), requires_grad=True)
  ref = D.ohem_cross_entropy(x, torch.tensor(labels, dtype=torch.long), 0.7, min_kept)
  ref.backward()
  fn = lambda l: losses.ohem_cross_entropy(l, labels, 0.7, min_kept)
  value, grad = jax.value_and_grad(fn)(jnp.asarray(logits))
  np.testing.assert_allclose(value, ref.item(), rtol=1e-6)
  np.testing.assert_allclose(_nchw(grad), x.grad.numpy(), atol=1e-7)
  assert float(losses.ohem_cross_entropy(logits, np.full_like(labels, 255))) == 0.0


def test_ohem_keeps_the_hard_pixels():
  """With one easy pixel among hard ones, the hard ones alone are averaged (the threshold is
  0.7); with `min_kept` above the hard count the threshold rises to keep that many."""
  logits = np.zeros((1, 1, 4, 2), np.float32)
  logits[0, 0, 0] = (10.0, 0.0)  # Easy: p(class 0) ~ 1.
  labels = np.zeros((1, 1, 4), np.int32)
  nll = np.log(2.0)  # The other three: p = 0.5.
  np.testing.assert_allclose(losses.ohem_cross_entropy(logits, labels, 0.7, 1), nll, rtol=1e-6)
  none_below = losses.ohem_cross_entropy(logits, labels, 0.4, 2)  # Threshold p = 0.5: none.
  np.testing.assert_allclose(none_below, 0.0)


@pytest.mark.parametrize('masked', [False, True])
def test_symmetric_distillation_matches_torch(masked, torch):
  from dakd_jax.torch_ref import diga as D  # pylint: disable=g-import-not-at-top
  student, teacher, labels = _logits(2, (4, 5, 6, 4)), _logits(3, (4, 5, 6, 4)), _labels(4)
  s = torch.tensor(_nchw(student), requires_grad=True)
  ref = D.distillation_loss(torch.tensor(_nchw(teacher)), s, 0.5,
                            torch.tensor(labels).long() if masked else None)
  ref.backward()
  mask = jnp.asarray(labels != 255) if masked else None
  fn = lambda st: losses.symmetric_distillation(st[:2], st[2:], teacher[:2], teacher[2:], 0.5, mask)
  value, grad = jax.value_and_grad(fn)(jnp.asarray(student))
  np.testing.assert_allclose(value, ref.item(), rtol=1e-6)
  np.testing.assert_allclose(_nchw(grad), s.grad.numpy(), atol=1e-7)


def test_ema_teacher_trajectory_matches_torch(torch):
  """Three steps of (EMA update, then an SGD step of the student), parameters only."""
  from dakd_jax.torch_ref import diga as D  # pylint: disable=g-import-not-at-top
  student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
  teacher.load_state_dict(student.state_dict())
  params = {k: jnp.asarray(v.detach().numpy()) for k, v in student.state_dict().items()}
  ema = dict(params)
  for i in range(3):
    D.update_teacher_params(teacher, student, i, ema_max=0.6)
    ema = diga.ema_update(ema, params, diga.ema_decay(jnp.int32(i), 0.6))
    for k, v in teacher.state_dict().items():
      np.testing.assert_allclose(ema[k], v.numpy(), rtol=1e-6, atol=1e-7)
    with torch.no_grad():
      for p in student.parameters():
        p.add_(torch.randn(p.shape))
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in student.state_dict().items()}
  np.testing.assert_allclose([diga.ema_decay(jnp.int32(i), 0.999) for i in (0, 1, 3, 10**4)],
                             [0.0, 0.5, 0.75, 0.999], rtol=1e-6)


# -------------------------------------------------------------------------- CrDoMix masks

def test_half_of_present_classes_chosen_from_draws():
  labels = np.full((2, 4, 4), 255, np.int32)
  labels[0, :2] = [[0, 0, 1, 1], [2, 2, 3, 3]]  # Classes 0-3 and 255 present: K = 5.
  labels[1] = 3  # K = 1: only 255 is kept.
  chosen = jax.jit(augment.choose_half_of_classes, static_argnums=2)(
      jax.random.PRNGKey(0), labels, 5)
  assert chosen.shape == (2, 6)
  # floor(5 / 2) = 2 values drawn (255 may be one of them), then 255 added.
  assert chosen[0, :4].sum() in (1, 2) and chosen[0, 5] and not chosen[0, 4]
  np.testing.assert_array_equal(chosen[1], [False] * 5 + [True])
  # With fixed draws: the floor(K / 2) present values with the smallest draws, then 255.
  present = np.array([[True, True, True, True, False, True]])
  draws = np.array([[0.9, 0.1, 0.5, 0.3, 0.0, 0.2]])
  np.testing.assert_array_equal(augment.chosen_from_draws(present, draws),
                                [[False, True, False, False, False, True]])
  mask = augment.class_mask(labels, chosen)
  expected = np.isin(labels, [c for c in range(5) if chosen[0, c]] + [255]).astype(np.float32)
  np.testing.assert_array_equal(mask[0], expected[0])
  a, b = np.ones((2, 4, 4, 3), np.float32), np.zeros((2, 4, 4, 3), np.float32)
  np.testing.assert_array_equal(augment.mix(mask, a, b)[..., 0], mask)


def test_class_choice_is_uniform_over_present_classes():
  labels = np.repeat(np.arange(4, dtype=np.int32), 4).reshape(1, 4, 4)  # K = 4: 2 chosen.
  keys = jax.random.split(jax.random.PRNGKey(0), 400)
  chosen = jax.vmap(lambda k: augment.choose_half_of_classes(k, labels, 4)[0])(keys)
  assert np.all(chosen[:, :4].sum(axis=1) == 2) and np.all(chosen[:, 4])
  np.testing.assert_allclose(chosen[:, :4].mean(axis=0), 0.5, atol=0.08)


# ------------------------------------------------------------------------ strong augmentation

def _reference_augment(x, p, beta):
  """float64 NumPy reference of the strong augmentation, one image at a time."""
  gray_w = np.array([0.299, 0.587, 0.114])
  yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
  out = []
  for i, img in enumerate(np.asarray(x, np.float64)):
    y = img.copy()
    if p['jitter'][i]:
      y = np.clip(y + p['brightness'][i], 0, 1)
      y = np.clip(y * p['contrast'][i], 0, 1)
      g = (y @ gray_w)[..., None]
      y = np.clip(g + p['saturation'][i] * (y - g), 0, 1)
      t = 2 * np.pi * p['hue'][i]
      rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
      y = np.clip(y @ (np.linalg.inv(yiq) @ rot @ yiq).T, 0, 1)
    if p['gray'][i]:
      y = np.repeat((y @ gray_w)[..., None], 3, axis=-1)
    h, w = y.shape[:2]
    if p['blur'][i]:
      taps = np.exp(-np.array([-1.0, 0.0, 1.0]) ** 2 / 8)
      k = np.outer(taps, taps) / taps.sum() ** 2
      pad = np.pad(y, ((1, 1), (1, 1), (0, 0)), mode='reflect')
      y = sum(k[a, b] * pad[a:a + h, b:b + w] for a in range(3) for b in range(3))
    if p['sharpness'][i]:
      k = np.ones((3, 3)) / 13
      k[1, 1] = 5 / 13
      smooth = y.copy()
      for r in range(1, h - 1):
        for c in range(1, w - 1):
          smooth[r, c] = np.einsum('ab,abk->k', k, y[r - 1:r + 2, c - 1:c + 2])
      f = p['sharpness_factor'][i]
      y = np.clip(smooth + f * (y - smooth), 0, 1)
    out.append(beta * (y - 0.5) / 0.5 + (1 - beta) * img)
  return np.stack(out)


def test_strong_augment_matches_reference_with_fixed_draws():
  x = np.random.default_rng(0).uniform(-0.2, 1.2, (6, 5, 7, 3)).astype(np.float32)
  params = augment.draw_strong_params(jax.random.PRNGKey(3), 6)
  params = {k: np.array(v) for k, v in params.items()}
  params['jitter'][:3] = True  # Every op exercised at least once, also all together.
  params['gray'][1:3], params['blur'][2:4], params['sharpness'][[2, 4]] = False, True, True
  params['gray'][0] = True
  apply = jax.jit(augment.apply_strong_augment, static_argnums=2)
  out = apply(jnp.asarray(x), params, 0.4)
  np.testing.assert_allclose(out, _reference_augment(x, params, 0.4), atol=2e-6)
  nothing = {k: np.zeros_like(v) if v.dtype == bool else v for k, v in params.items()}
  np.testing.assert_allclose(apply(x, nothing, 0.4),
                             0.4 * (x - 0.5) / 0.5 + 0.6 * x, atol=1e-6)


def test_strong_augment_probabilities_and_ranges():
  p = augment.draw_strong_params(jax.random.PRNGKey(0), 4000)
  for name, prob in augment.PROBS.items():
    assert abs(float(np.mean(p[name])) - prob) < 0.03, name
  synthia = {'jitter': 0.7, 'gray': 0.1}  # DiGA's SYNTHIA warm-up.
  q = augment.draw_strong_params(jax.random.PRNGKey(0), 4000, synthia)
  for name, prob in {**augment.PROBS, **synthia}.items():
    assert abs(float(np.mean(q[name])) - prob) < 0.03, name
  method = methods.create('diga_warmup', {'jitter_p': 0.7, 'gray_p': 0.1})
  assert method.augment_probs == synthia
  assert -0.4 <= p['brightness'].min() and p['brightness'].max() <= 0.4
  assert 0.0 <= p['sharpness_factor'].min() and p['sharpness_factor'].max() <= 0.5


# ----------------------------------------------------------------------------------- method

def test_method_options_are_checked():
  assert methods.create('diga_warmup', {}).lambda_distil == 0.5
  with pytest.raises(Exception, match='translation: expected one of'):
    methods.create('diga_warmup', {'translation': 'cyclegan'})
  with pytest.raises(Exception, match='ema_max'):
    methods.create('diga_warmup', {'ema_max': 1.0})
  with pytest.raises(Exception, match='seg_loss: expected one of'):
    methods.create('diga_warmup', {'seg_loss': 'focal'})
  with pytest.raises(Exception, match='gray_p: expected a value in'):
    methods.create('diga_warmup', {'gray_p': 1.5})
  with pytest.raises(Exception, match='centroid_passes: expected 0 or more'):
    methods.create('diga_selftrain', {'centroid_passes': -1})


@pytest.mark.slow
def test_warmup_and_selftraining_run_and_resume_exactly(synthetic_root, tfds_dir, tmp_path,
                                                        killed_run):
  """Warm-up then self-training on the synthetic pair. A run killed in the warm-up after its
  step-2 checkpoint, resumed, and killed again in self-training, then resumed, ends where an
  uninterrupted one does: the EMA teacher and the centroid bank come back with the student."""
  from configs import diga_tiny  # pylint: disable=g-import-not-at-top

  def config():
    c = diga_tiny.get_config()
    c.roots.gta5 = os.path.join(synthetic_root, 'gta5')
    c.roots.cityscapes = os.path.join(synthetic_root, 'cityscapes')
    c.data_dir = tfds_dir
    c.pipeline = ('diga_warmup', 'diga_selftrain')
    c.stages.diga_warmup.num_steps = c.stages.diga_selftrain.num_steps = 4
    return c

  straight = str(tmp_path / 'straight')
  results = experiment.run(config(), straight)
  assert all(0 <= results[s]['miou'] <= 1 for s in ('diga_warmup', 'diga_selftrain'))
  resumed = str(tmp_path / 'resumed')
  for occurrence in (1, 2):  # Step 3 of the warm-up, then (after it resumed) of self-training.
    killed_run(config(), resumed, 3, occurrence)
  assert stages_lib.is_complete(stages_lib.stage_dir(resumed, 'diga_warmup'))
  assert not stages_lib.is_complete(stages_lib.stage_dir(resumed, 'diga_selftrain'))
  experiment.run(config(), resumed)
  for stage in ('diga_warmup', 'diga_selftrain'):
    a, b = (networks_lib.load_network(stages_lib.export_dir(w, stage))[1]
            for w in (straight, resumed))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-6)
  with open(os.path.join(straight, 'diga_selftrain', 'metrics.jsonl')) as f:
    logged = [json.loads(line) for line in f]
  assert {'loss/src/seg', 'loss/src/distil', 'loss/tgt/mix_seg'} <= set(logged[-1])


@pytest.mark.slow
def test_prepare_mixes_the_translated_image_and_averages_the_teacher():
  """Step 1 of a run: the teacher becomes (teacher + student) / 2; x_cdm is the strong view on
  the chosen classes (and 255) and the translator's image elsewhere; both views are forwarded."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from dakd_jax.state import create_train_state  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  class Net(nn.Module):
    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train=False):
      return {'main': nn.Conv(self.num_classes, (1, 1))(x)}

  method = methods.create('diga_warmup', {})
  assert method.frozen == ('translator',) and not method.uses_target
  translator = nn.Conv(3, (1, 1))  # Any image-to-image network (the real one: test_diga_models).
  source = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 3))
  labels = jnp.asarray(np.tile(np.arange(4, dtype=np.int32) % 3, (2, 8, 2)))
  labels = labels.at[:, 0].set(255)
  batch = {'source_image': source, 'source_label': labels}
  frozen = {'translator': methods.FrozenNetwork(
      translator, jax.jit(translator.init)(jax.random.PRNGKey(1), source))}
  translated = method.frozen_outputs(frozen, batch)
  np.testing.assert_allclose(translated, translator.apply(frozen['translator'].variables, source),
                             atol=1e-6)
  net = Net()
  state = create_train_state(net.init(jax.random.PRNGKey(2), source), {}, optax.sgd(0.1), {},
                             jax.random.PRNGKey(3),
                             init_method_state=functools.partial(method.init_state, network=net))
  student = jax.tree.map(lambda p: p + 1.0, state.network.params)
  state = state.replace(step=jnp.int32(1), network=state.network.replace(params=student))
  key = jax.random.PRNGKey(4)
  inputs, context, new_state = jax.jit(method.prepare, static_argnums=4)(
      state, batch, translated, key, net)
  for t, s in zip(jax.tree.leaves(new_state['teacher']['params']), jax.tree.leaves(student)):
    np.testing.assert_allclose(t, s - 0.5, atol=1e-6)
  x_cdm = inputs['source'][2:]
  np.testing.assert_array_equal(inputs['source'][:2], source)
  view_key, _ = jax.random.split(key)
  aug_key, mix_key = jax.random.split(view_key)
  strong = jax.jit(augment.strong_augment, static_argnums=2)(aug_key, source, 0.4)
  chosen = jax.jit(augment.choose_half_of_classes, static_argnums=2)(mix_key, labels, 3)
  mask = augment.class_mask(labels, chosen)
  assert 0 < float(jnp.mean(mask)) < 1 and np.all(np.asarray(mask)[:, 0] == 1)
  np.testing.assert_allclose(x_cdm, np.where(mask[..., None] == 1, strong, translated), atol=1e-6)
  assert context['teacher'].shape == (4, 8, 8, 3)


def test_diga_normalization_is_caffe_over_128():
  from dakd_jax.data import transforms  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.uint8)
  diga_input = transforms.normalize(image, 'diga')
  np.testing.assert_allclose(diga_input, transforms.normalize(image, 'caffe') / 128.0)
  np.testing.assert_array_equal(transforms.denormalize(diga_input, 'diga'), image)


@pytest.mark.slow
def test_selftraining_prepare_labels_mixes_and_moves_the_centroids():
  """One self-training `prepare`: consensus of the labeler and the (zero) centroids, ClassMix
  of source classes into the augmented target with their labels, centroid bank updated."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from dakd_jax import centroids  # pylint: disable=g-import-not-at-top
  from dakd_jax.state import create_train_state  # pylint: disable=g-import-not-at-top

  class FeatNet(nn.Module):
    num_classes: int = 3
    return_features: bool = False

    @nn.compact
    def __call__(self, x, train=False):
      f = nn.Conv(4, (1, 1), name='feat')(x)
      out = {'main': nn.Conv(self.num_classes, (1, 1), name='cls')(f)}
      return {**out, 'features': f} if self.return_features else out

  method = methods.create('diga_selftrain', {'translation': 'colour_stats',
                                             'offline_labels': False})
  assert method.frozen == ('labeler',) and method.uses_target and method.lambda_distil == 0.25
  assert not method.pseudo_labeler
  net = FeatNet()
  source = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 3))
  target = jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 8, 3))
  labels = jnp.asarray(np.tile(np.arange(4, dtype=np.int32) % 3, (2, 8, 2)))
  batch = {'source_image': source, 'source_label': labels, 'target_image': target}
  variables = net.init(jax.random.PRNGKey(2), source)
  labeler = methods.FrozenNetwork(net, net.init(jax.random.PRNGKey(5), source))
  frozen_outputs = method.frozen_outputs({'labeler': labeler}, batch)
  offline = frozen_outputs['offline']
  assert frozen_outputs['translated'] is None and offline.shape == (2, 8, 8)
  state = create_train_state(variables, {}, optax.sgd(0.1), {}, jax.random.PRNGKey(3),
                             init_method_state=functools.partial(method.init_state, network=net))
  assert state.method_state['centroids'].shape == (3, 4)
  key = jax.random.PRNGKey(4)
  inputs, context, new_state = jax.jit(method.prepare, static_argnums=4)(
      state, batch, frozen_outputs, key, net)
  assert set(inputs) == {'source', 'mix'} and inputs['source'].shape == (4, 8, 8, 3)
  _, _, mix_key, _ = jax.random.split(key, 4)
  chosen = jax.jit(augment.choose_half_of_classes, static_argnums=2)(mix_key, labels, 3)
  mask = np.asarray(augment.class_mask(labels, chosen))
  consensus = np.where(np.asarray(offline) == 0, offline, 255)  # Zero centroids: all tie, 0.
  np.testing.assert_array_equal(context['mix_label'], np.where(mask == 1, labels, consensus))
  np.testing.assert_allclose(np.asarray(inputs['mix'])[mask == 1],
                             np.asarray(source)[mask == 1], atol=1e-6)
  counts = np.asarray(new_state['centroid_counts'])
  assert counts.sum() > 0 and new_state['teacher']['params'].keys() == variables['params'].keys()
  moved = np.asarray(new_state['centroids'])[counts > 0]
  assert np.all(np.abs(moved).sum(axis=-1) > 0)
  assert centroids.MOMENTUM == method.centroid_momentum
  offline_method = methods.create('diga_selftrain', {'translation': 'colour_stats'})
  given = {**batch, 'target_label': labels}  # The offline labels the target stream carries.
  assert offline_method.frozen_outputs({'labeler': labeler}, given)['offline'] is labels


def test_gta2cs_config_has_the_official_settings_and_needs_the_translator(tmp_path):
  from configs import diga_gta2cs  # pylint: disable=g-import-not-at-top
  from dakd_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  config = diga_gta2cs.get_config()
  config_lib.validate(config)
  assert config.pipeline == ('translator', 'warmup', 'selftrain1', 'selftrain2')
  assert config.normalization == 'diga' and config.networks.diga.arch == 'diga_deeplabv2_r101'
  for name in config.pipeline[1:]:  # The translator stage: tests/test_diga_translator.py.
    stage = config.stages[name]
    assert (stage.num_steps, stage.optim.lr, stage.optim.head_lr_mult) == (80_000, 2.5e-4, 10.0)
    assert stage.source.augment.crop == (512, 896) and stage.source.augment.flip
    assert stage.source.augment.per_axis_scale and stage.source.augment.crop_redraws == 5
    assert stage.target.augment.crop_redraws == 0
  assert config.eval.scales == (1.0, 0.5) and config.eval.input_size == (1024, 2048)
  gta, cs = ((720, 1280), (1052, 1914)), ((512, 1024), (1024, 2048))  # (low, full) sizes.
  warmup, selftrain = config.stages.warmup, config.stages.selftrain1
  assert warmup.source.sizes == (gta[0],) + (gta[1],) * 2 and warmup.batch_size == 3
  assert selftrain.target.sizes == (cs[0],) * 2 + (cs[1],) and selftrain.batch_size == 3
  translator = config.stages.translator
  assert translator.source.sizes == gta and translator.target.sizes == cs
  assert config.stages.warmup.options.lambda_distil == 0.5
  assert config.stages.selftrain2.options.lambda_distil == 0.25
  assert config.stages.selftrain2.frozen.labeler == 'stage:selftrain1'
  config.pipeline = ('warmup', 'selftrain1', 'selftrain2')  # Without the translator stage:
  with pytest.raises(Exception, match=r"stages\.warmup\.frozen\.translator: stage 'translator' "
                     'has not run'):
    stages_lib.plan(config, str(tmp_path))
  config.translator = str(tmp_path)  # One key points every stage at the converted translator.
  assert config.stages.selftrain1.frozen.translator == str(tmp_path)


def test_per_axis_rescale_and_crop_redraw_rule():
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from dakd_jax.data import transforms  # pylint: disable=g-import-not-at-top
  element = {'image': Image.new('RGB', (100, 100)), 'label': Image.new('L', (100, 100))}
  sizes = {transforms.RandomScale((0.7, 1.0), per_axis=True).random_map(
      element, np.random.default_rng(seed))['image'].size for seed in range(20)}
  assert any(w != h for w, h in sizes) and all(70 <= s <= 100 for wh in sizes for s in wh)
  assert all(w == h for w, h in (transforms.RandomScale((0.7, 1.0)).random_map(
      element, np.random.default_rng(s))['image'].size for s in range(5)))
  three = np.repeat(np.array([0, 1, 2, 3], np.int32), 25)[None].repeat(4, 0)
  assert transforms.informative_crop(three)
  assert transforms.informative_crop(np.where(three < 2, 0, 1))  # Two values, no 255.
  assert not transforms.informative_crop(np.where(three < 2, 0, 255))
  assert not transforms.informative_crop(np.zeros((4, 100), np.int32))
  # Left half all road: an informative 10-wide crop exists only on the right.
  label = np.zeros((10, 40), np.int32)
  label[:, 30:] = np.arange(10)[None] % 3
  image = np.zeros((10, 40, 3), np.float32)
  crops = [transforms.RandomCropFlip((10, 10), False, redraws).random_map(
      {'image': image, 'label': label}, np.random.default_rng(seed))['label']
           for redraws in (0, 50) for seed in range(10)]
  assert not all(transforms.informative_crop(c) for c in crops[:10])
  assert all(transforms.informative_crop(c) for c in crops[10:])
