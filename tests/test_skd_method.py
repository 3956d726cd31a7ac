"""The SKD method: its terms and player, training-mode players in the generic step (state threaded
through every call, in order), and an SKD stage trained end to end on the synthetic pair with
exact resumption."""

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dakd_jax import checkpointing
from dakd_jax import experiment
from dakd_jax import methods
from dakd_jax import models
from dakd_jax import networks as networks_lib
from dakd_jax import stages as stages_lib
from dakd_jax import steps
from dakd_jax import train as train_lib
from dakd_jax.methods import base
from dakd_jax.methods import skd
from dakd_jax.tools import benchmark

SKD_TERMS = {'src/seg_main', 'src/seg_aux', 'src/pixelwise', 'src/pairwise', 'src/holistic'}


class _Counting(nn.Module):
  """y = w x; counts its training-mode calls in a non-trainable collection."""

  @nn.compact
  def __call__(self, x, train=False):
    calls = self.variable('spectral', 'calls', jnp.zeros, ())
    if train and not self.is_initializing():
      calls.value = calls.value + 1
    return self.param('w', nn.initializers.ones, ()) * x


def test_player_call_threads_training_state_in_call_order():
  module = _Counting()
  variables = module.init(jax.random.PRNGKey(0), jnp.ones(2))
  call = base.PlayerCall(module, variables, train=True)
  call(jnp.ones(2))
  out, pure_state = call.apply(call.state, jnp.ones(2))  # The pure form leaves `state` alone.
  assert float(call.state['spectral']['calls']) == 1 and float(pure_state['spectral']['calls']) == 2
  call(jnp.ones(2))
  assert float(call.state['spectral']['calls']) == 2
  frozen = base.PlayerCall(module, variables, train=False)
  frozen(jnp.ones(2))
  assert float(frozen.state['spectral']['calls']) == 0
  np.testing.assert_array_equal(out, jnp.ones(2))


def test_skd_options_terms_and_player():
  method = methods.create('skd', {})
  assert (method.lambda_pi, method.lambda_pa, method.lambda_d, method.lambda_gp) == (
      10.0, 0.5, 0.1, 10.0)
  assert not method.uses_target and method.needs_features and method.frozen == ('teacher',)
  (name, player), = method.players(19).items()
  assert name == skd.DISCRIMINATOR and player.arch == 'skd_discriminator' and player.train
  assert methods.create('skd', {'lambda_d': 0.0}).players(19) == {}
  assert not methods.create('skd', {'lambda_pa': 0.0}).needs_features
  for options, message in (({'adv_loss': 'bce'}, 'adv_loss'), ({'teacher_bn': 'x'}, 'teacher_bn'),
                           ({'d_input_size': (64,)}, 'd_input_size')):
    with pytest.raises(ValueError, match=f'options.{message}: expected'):
      methods.create('skd', options)


def test_players_directory_keeps_the_power_iteration_vectors(tmp_path):
  """A stage that starts its players from another's (`players='stage:<name>'`) gets the SKD
  critic's `spectral` (u, v) back with its weights; inference reads of the same directory
  (`reference` not given) keep params and batch_stats only."""
  player = methods.create('skd', {}).players(19)[skd.DISCRIMINATOR]
  shapes = jax.eval_shape(player.module.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 19)))
  rng = np.random.default_rng(0)
  saved = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)
  assert 'spectral' in saved
  directory = str(tmp_path / skd.DISCRIMINATOR)
  networks_lib.save_network(directory, player.spec, saved)
  _, loaded = networks_lib.load_network(directory, reference=shapes)
  assert set(loaded) == set(saved)
  jax.tree.map(np.testing.assert_array_equal, loaded, saved)
  _, inference = networks_lib.load_network(directory)
  assert set(inference) == set(saved) & {'params', 'batch_stats'}


def test_teacher_in_train_mode_draws_its_dropout_from_the_step_key():
  """`teacher_bn='train'` with a PSPNet teacher (dropout before its classifiers; the R18 one
  compiles fastest): the teacher runs with batch statistics and dropout keyed by the step, so
  two keys differ and one key repeats; in eval mode (SKD's) the outputs do not depend on it."""
  teacher = models.create_model('pspnet_r18', 19, width=1 / 8)
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  variables = jax.jit(teacher.init)(jax.random.PRNGKey(1), images)

  @functools.partial(jax.jit, static_argnums=0)
  def outputs(mode, seed):
    frozen = {'teacher': base.FrozenNetwork(teacher, variables)}
    return methods.create('skd', {'teacher_bn': mode}).frozen_outputs(
        frozen, {'source_image': images, 'rng': jax.random.PRNGKey(seed)})['main']

  np.testing.assert_array_equal(outputs('train', 2), outputs('train', 2))
  assert np.abs(outputs('train', 2) - outputs('train', 3)).max() > 1e-3
  np.testing.assert_array_equal(outputs('eval', 2), outputs('eval', 3))


def test_skd_network_terms_values():
  method = methods.create('skd', {'lambda_d': 0.0, 'pool_scale': 0.5})
  rng = np.random.default_rng(0)
  outputs = lambda c: {'main': jnp.asarray(rng.normal(size=(2, 16, 16, 5)), jnp.float32),
                       'aux': jnp.asarray(rng.normal(size=(2, 16, 16, 5)), jnp.float32),
                       'stride8': {'main': jnp.asarray(rng.normal(size=(2, 2, 2, 5)),
                                               jnp.float32)},
                       'main_features': jnp.asarray(rng.normal(size=(2, 2, 2, c)), jnp.float32)}
  student, teacher = outputs(3), outputs(7)
  labels = jnp.asarray(rng.integers(0, 5, (2, 16, 16)), jnp.int32)
  terms, player_inputs = method.network_terms(
      {'source': student}, {'source_label': labels, 'rng': jax.random.PRNGKey(0)}, {}, teacher)
  assert set(terms) == SKD_TERMS - {'src/holistic'} and player_inputs == {}
  from dakd_jax import skd_losses  # pylint: disable=g-import-not-at-top
  np.testing.assert_allclose(terms['src/pixelwise'], 10.0 * skd_losses.pixelwise_distillation(
      student['stride8']['main'], teacher['stride8']['main']), rtol=1e-6)
  np.testing.assert_allclose(terms['src/pairwise'], 0.5 * skd_losses.pairwise_distillation(
      student['main_features'], teacher['main_features']), rtol=1e-6)


# ------------------------------------------------------------------------------ slow: the step

def _tiny_config(synthetic_root, tfds_dir, **overrides):
  """configs/skd_synthetic.py on the session's synthetic pair, at test sizes (48x64 crops)."""
  from configs import skd_synthetic  # pylint: disable=g-import-not-at-top
  config = skd_synthetic.get_config()
  config.synthetic.enabled = False
  config.roots.cityscapes = os.path.join(synthetic_root, 'cityscapes')
  config.roots.gta5 = os.path.join(synthetic_root, 'gta5')
  config.data_dir = tfds_dir
  config.eval.input_size = (64, 128)
  config.eval.num_grid_images = 2
  config.networks.teacher.options.width = 1 / 16
  config.networks.student.options.width = 1 / 16
  config.stages.skd.options.conv_dim = 4
  for stage in config.stages.values():
    stage.source.size = stage.target.size = (64, 128)
    stage.source.augment.crop = stage.target.augment.crop = (48, 64)
    stage.batch_size = 8
    stage.num_steps = 4
  config.train.log_every = 2
  config.train.checkpoint_every = 2
  config.update_from_flattened_dict(overrides)
  return config


def _power_iterations(u, matrix, n):
  for _ in range(n):
    v = matrix.T @ u
    v /= np.linalg.norm(v)
    u = matrix @ v
    u /= np.linalg.norm(u)
  return u


@pytest.mark.slow
def test_skd_step_updates_every_player_collection(synthetic_root, tfds_dir):
  config = _tiny_config(synthetic_root, tfds_dir)
  stage = benchmark.stage_spec(config, 'skd')
  run = experiment.run_settings(config)
  variables = train_lib.random_variables(stage, run, frozen=True)
  b = train_lib.build_stage(stage, run, variables)  # The program the stage test runs too.
  start = jax.device_get(b.state)
  state, metrics = b.step_fn(b.state, b.global_batch(benchmark.random_batch(stage, 19, 0)),
                             b.frozen_variables)
  state, metrics = jax.device_get((state, metrics))
  assert {k[len('loss/'):] for k in metrics if k.startswith('loss/')} == (
      SKD_TERMS | {'total', skd.DISCRIMINATOR})
  before, after = start.players[skd.DISCRIMINATOR], state.players[skd.DISCRIMINATOR]
  changed = lambda a, b: not all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
  assert changed(before.params, after.params) and changed(before.batch_stats, after.batch_stats)
  assert changed(start.network.params, state.network.params)
  # Four training forwards of the discriminator (the network's D(S), then D(T), D(S) and the
  # gradient penalty's), each one power iteration on the pre-update kernel, as SKD's step.
  kernel = np.asarray(before.params['l1']['kernel'], np.float64)
  matrix = kernel.transpose(3, 2, 0, 1).reshape(kernel.shape[3], -1)
  expected = _power_iterations(np.asarray(before.collections['spectral']['l1']['u'], np.float64),
                               matrix, 4)
  np.testing.assert_allclose(after.collections['spectral']['l1']['u'], expected, atol=1e-5)


@pytest.mark.slow
def test_skd_stage_trains_and_resumes_exactly(synthetic_root, tfds_dir, tmp_path, killed_run):
  from dakd_jax import models  # pylint: disable=g-import-not-at-top
  teacher_dir = str(tmp_path / 'teacher')
  spec = {'arch': 'pspnet_r101', 'num_classes': 19, 'options': {'width': 1 / 16}}
  shapes = models.abstract_variables(spec['arch'], 19, **spec['options'])
  rng = np.random.default_rng(0)

  def draw(path, leaf):  # He-normal kernels, unit BatchNorm: a teacher with sane outputs.
    name = path[-1].key
    if name == 'kernel':
      k_h, k_w, _, c_out = leaf.shape
      return rng.normal(0.0, np.sqrt(2.0 / (k_h * k_w * c_out)), leaf.shape).astype(np.float32)
    return np.full(leaf.shape, 1.0 if name in ('scale', 'var') else 0.0, np.float32)

  networks_lib.save_network(teacher_dir, spec, jax.tree_util.tree_map_with_path(draw, shapes))
  make = functools.partial(_tiny_config, synthetic_root, tfds_dir, pipeline=('skd',),
                           **{'stages.skd.frozen.teacher': teacher_dir})
  straight = str(tmp_path / 'straight')
  results = experiment.run(make(), straight)
  assert 0 <= results['skd']['miou'] <= 100

  resumed = str(tmp_path / 'resumed')
  killed_run(make(), resumed, 3)  # Two steps done and checkpointed.
  experiment.run(make(), resumed)
  for directory in (stages_lib.export_dir, lambda w, s: os.path.join(
      stages_lib.players_dir(w, s), skd.DISCRIMINATOR)):
    a, b = (checkpointing.load_variables(os.path.join(directory(w, 'skd'),
                                                      networks_lib.VARIABLES_SUBDIR))
            for w in (straight, resumed))
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-6)
  assert 'spectral' in a  # The discriminator's power-iteration vectors are kept.


def test_benchmark_batch_of_the_published_config_is_the_crop():
  from configs import skd_cityscapes  # pylint: disable=g-import-not-at-top
  config = skd_cityscapes.get_config()
  stage = benchmark.stage_spec(config, 'skd')
  assert stage.optim.d_optimizer == 'sgd' and stage.optim.d_lr == 4e-4 and stage.optim.lr == 1e-2
  assert stage.batch_size == 8 and stage.num_steps == 40_000
  batch = benchmark.random_batch(stage, 19, 0)
  assert batch['source_image'].shape == (8, 512, 512, 3) and 'target_image' not in batch
  assert batch['source_label'].shape == (8, 512, 512)


@pytest.mark.slow
def test_dakd_takes_skd_terms_on_its_distilled_domains():
  """Off by default; with weights, pair-wise and holistic terms on the paradigm's domains and one
  SKD critic beside AdaptSegNet's discriminators (traced, not compiled)."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  assert config.stages.distill_c.options.lambda_pa_skd == 0.0
  assert config.stages.distill_c.options.lambda_d_skd == 0.0
  options = config.stages.distill_b.options
  options.lambda_pa_skd, options.lambda_d_skd = 0.5, 0.1
  options.skd_conv_dim, options.skd_d_input_size = 4, (64, 64)
  stage = benchmark.stage_spec(config, 'distill_b')
  run = experiment.run_settings(config)
  programs = []

  def metrics():
    b = train_lib.build_stage(stage, run, train_lib.random_variables(stage, run, frozen=True))
    programs.append(b.program)
    return steps.train_step(b.state, benchmark.random_batch(stage, 19, 0), b.frozen_variables,
                            program=b.program)[1]

  terms = {k[len('loss/'):] for k in jax.eval_shape(metrics) if k.startswith('loss/')}
  assert {'tgt/skd_pairwise', 'tgt/skd_holistic', skd.DISCRIMINATOR} <= terms
  assert not any(t.startswith('src/skd') for t in terms)  # Paradigm (b): target only.
  assert set(programs[0].players) == {'disc_aux', 'disc_main', skd.DISCRIMINATOR}
