"""The training step: loss terms per paradigm, gradient isolation, update order, data parallelism."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dakd_jax import config as config_lib
from dakd_jax import networks as networks_lib
from dakd_jax import optim
from dakd_jax import sharding
from dakd_jax import steps
from dakd_jax import train as train_lib
from dakd_jax.state import create_train_state

H, W, BATCH, STEPS = 32, 64, 8, 10
BASE_TERMS = {'src/seg_main', 'src/seg_aux', 'tgt/adv_aux', 'tgt/adv_main'}
DISTILL_TERMS = {'kl_main', 'kl_aux', 'mse', 'pseudo_ce'}


def tiny_config(**distill):
  config = config_lib.base_config()
  config.student.options.width = 1 / 16
  config.teacher.options.width = 1 / 16
  config.discriminator.ndf = 4
  config.optim.lr = 0.01
  config.optim.d_lr = 1e-3
  for key, value in distill.items():
    config.distill[key] = value
  return config


def random_batch(seed=0, batch=BATCH):
  rng = np.random.default_rng(seed)
  label = rng.integers(0, 19, (batch, H, W)).astype(np.int32)
  label[:, :4] = 255  # Some ignored pixels.
  return {'source_image': rng.normal(0, 50, (batch, H, W, 3)).astype(np.float32),
          'source_label': label,
          'target_image': rng.normal(10, 60, (batch, H, W, 3)).astype(np.float32)}


def build(config, mode):
  """Networks, weights, initial state and teacher variables of a tiny stage."""
  rng = jax.random.PRNGKey(0)
  student = networks_lib.create_segmentation_model(networks_lib.model_spec(config, 'student'))
  disc = networks_lib.create_discriminator(config)
  s_vars = networks_lib.init_variables(student, jax.random.PRNGKey(1))
  student_tx = optim.make_segmentation_optimizer(config.optim, STEPS, s_vars['params'])
  disc_tx = optim.make_discriminator_optimizer(config.optim, STEPS)
  teacher, t_vars = None, None
  if mode == 'distill':
    teacher = networks_lib.create_segmentation_model(networks_lib.model_spec(config, 'teacher'))
    t_vars = networks_lib.init_variables(teacher, jax.random.PRNGKey(2))
  nets = steps.Networks(student=student, discriminator=disc, student_tx=student_tx,
                        disc_tx=disc_tx, teacher=teacher)
  state = create_train_state(
      s_vars, networks_lib.init_variables(disc, jax.random.PRNGKey(3), channels=19),
      networks_lib.init_variables(disc, jax.random.PRNGKey(4), channels=19),
      student_tx, disc_tx, rng)
  return nets, steps.loss_weights_from_config(config, mode), state, t_vars


@functools.cache
def cached_build(mode, paradigm='c', gamma=1.0, method='adaptsegnet'):
  """Builds (and jit-compiles once) the stages shared by several tests."""
  config = tiny_config(paradigm=paradigm, gamma=gamma)
  config.adapt.method = method
  nets, weights, state, t_vars = build(config, mode)
  step = jax.jit(functools.partial(steps.train_step, networks=nets, weights=weights))
  return nets, weights, state, t_vars, step


def run_step(nets, weights, state, teacher_vars, batch):
  fn = functools.partial(steps.train_step, networks=nets, weights=weights)
  return jax.jit(fn)(state, batch, teacher_vars)


def loss_terms(metrics):
  return {k[len('loss/'):] for k in metrics if k.startswith('loss/')} - {'total', 'disc_aux',
                                                                          'disc_main'}


@pytest.mark.parametrize('paradigm,domains', [('a', {'src'}), ('b', {'tgt'}),
                                              ('c', {'src', 'tgt'}), ('d', {'tgt'})])
def test_each_paradigm_has_exactly_its_terms(paradigm, domains):
  nets, _, state, t_vars, _ = cached_build('distill')
  weights = steps.loss_weights_from_config(tiny_config(paradigm=paradigm), 'distill')
  # Tracing is enough to see which terms exist; values are checked on (c) below.
  _, metrics = jax.eval_shape(functools.partial(steps.train_step, networks=nets, weights=weights),
                              state, random_batch(), t_vars)
  expected = BASE_TERMS | {f'{d}/{t}' for d in domains for t in DISTILL_TERMS}
  assert loss_terms(metrics) == expected
  assert {'loss/disc_aux', 'loss/disc_main'} <= set(metrics)


def test_loss_terms_are_positive_and_sum_to_the_total():
  *_, state, t_vars, step = cached_build('distill')
  _, metrics = step(state, random_batch(), t_vars)
  terms = [float(v) for k, v in metrics.items() if k.count('/') == 2]
  assert len(terms) == len(BASE_TERMS) + 2 * len(DISTILL_TERMS)
  assert all(np.isfinite(terms)) and all(t > 0 for t in terms)
  np.testing.assert_allclose(float(metrics['loss/total']), sum(terms), rtol=1e-5)


def test_adaptation_and_source_only_terms():
  nets, weights, state, _, _ = cached_build('adapt')
  _, metrics = jax.eval_shape(functools.partial(steps.train_step, networks=nets, weights=weights),
                              state, random_batch(), None)
  assert loss_terms(metrics) == BASE_TERMS
  nets, weights, state, _, step = cached_build('adapt', method='source_only')
  new_state, metrics = step(state, random_batch(), None)
  assert loss_terms(metrics) == {'src/seg_main', 'src/seg_aux'}
  assert 'loss/disc_main' not in metrics
  unchanged = jax.tree.map(np.array_equal, new_state.disc_main.params, state.disc_main.params)
  assert all(jax.tree.leaves(unchanged))


def test_gamma_scales_target_terms_only():
  batch = random_batch()
  *_, state, t_vars, step = cached_build('distill')
  _, m1 = step(state, batch, t_vars)
  *_, state, t_vars, step = cached_build('distill', gamma=0.25)
  _, m2 = step(state, batch, t_vars)
  for term in DISTILL_TERMS:
    np.testing.assert_allclose(float(m2[f'loss/tgt/{term}']),
                               0.25 * float(m1[f'loss/tgt/{term}']), rtol=1e-5)
    np.testing.assert_allclose(float(m2[f'loss/src/{term}']), float(m1[f'loss/src/{term}']),
                               rtol=1e-6)


@pytest.mark.parametrize('teacher_bn', ['eval', 'train'])
def test_no_gradient_reaches_the_teacher(teacher_bn):
  nets, _, state, t_vars, _ = cached_build('distill')
  weights = steps.loss_weights_from_config(tiny_config(teacher_bn=teacher_bn), 'distill')
  batch = jax.tree.map(jnp.asarray, random_batch(batch=2))

  def total_loss(teacher_params):
    tv = {**t_vars, 'params': teacher_params}
    teacher = {'source': steps.teacher_outputs(nets, tv, batch['source_image'], weights),
               'target': steps.teacher_outputs(nets, tv, batch['target_image'], weights)}
    return steps.generator_loss(state.student.params, state, nets, weights, batch, teacher)[0]

  grads = jax.jit(jax.grad(total_loss))(t_vars['params'])
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_teacher_runs_in_its_own_precision():
  """`distill.teacher_dtype` puts the teacher's convolutions, and only those, in bf16."""
  config = tiny_config()
  rng = jax.random.PRNGKey(0)
  make = lambda net, dtype='float32': networks_lib.create_segmentation_model(
      networks_lib.model_spec(config, net), dtype)
  disc = networks_lib.create_discriminator(config)
  variables = {'student': networks_lib.init_variables(make('student'), rng),
               'teacher': networks_lib.init_variables(make('teacher'), rng),
               'disc_aux': networks_lib.init_variables(disc, rng, channels=19),
               'disc_main': networks_lib.init_variables(disc, rng, channels=19)}
  batch = random_batch()

  def bf16_convolutions(teacher_dtype):
    config.distill.teacher_dtype = teacher_dtype
    stage = train_lib.build_stage(config, 'distill', variables)
    text = stage.step_fn.lower(stage.state, stage.global_batch(batch),
                               stage.teacher_variables).as_text()
    convs = [line for line in text.splitlines() if 'stablehlo.convolution' in line]
    return sum('bf16' in line for line in convs), len(convs)

  teacher_forward = jax.jit(make('teacher').apply).lower(
      variables['teacher'], jnp.zeros((BATCH, H, W, 3))).as_text()
  convs_per_teacher_pass = teacher_forward.count('stablehlo.convolution')
  assert bf16_convolutions('bfloat16')[0] == 2 * convs_per_teacher_pass  # source + target
  assert bf16_convolutions('')[0] == 0

  # The bf16 teacher's logits follow the float32 teacher's.
  weights = steps.loss_weights_from_config(config, 'distill')
  images = jnp.asarray(batch['source_image'])
  outputs = {dtype: steps.teacher_outputs(
      steps.Networks(student=None, discriminator=None, student_tx=None, disc_tx=None,
                     teacher=make('teacher', dtype)), variables['teacher'], images, weights)
             for dtype in ('float32', 'bfloat16')}
  ref, low = outputs['float32']['main'], outputs['bfloat16']['main']
  assert low.dtype == jnp.float32
  assert float(jnp.linalg.norm(low - ref) / jnp.linalg.norm(ref)) < 3e-2


def test_players_do_not_move_each_other():
  """Student and discriminator updates are independent and both use the pre-update weights."""
  nets, weights, state, t_vars, step = cached_build('adapt')
  batch = random_batch()
  full, _ = step(state, batch, t_vars)
  frozen = optax.set_to_zero()
  empty = frozen.init(None)
  only_student, _ = run_step(dataclasses.replace(nets, disc_tx=frozen), weights,
                             state.replace(disc_aux=state.disc_aux.replace(opt_state=empty),
                                           disc_main=state.disc_main.replace(opt_state=empty)),
                             t_vars, batch)
  only_disc, _ = run_step(dataclasses.replace(nets, student_tx=frozen), weights,
                          state.replace(student=state.student.replace(opt_state=empty)), t_vars,
                          batch)
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
  # Freezing the discriminators changes nothing in the student update, and vice versa.
  assert same(only_student.student.params, full.student.params)
  assert same(only_disc.disc_main.params, full.disc_main.params)
  assert same(only_disc.disc_aux.params, full.disc_aux.params)
  # And each frozen player really stayed put while the other moved.
  assert same(only_student.disc_main.params, state.disc_main.params)
  assert same(only_disc.student.params, state.student.params)
  assert not same(full.student.params, state.student.params)
  assert not same(full.disc_main.params, state.disc_main.params)


def test_one_device_equals_eight_devices():
  assert jax.device_count() == 8
  nets, weights, state, t_vars, step = cached_build('distill')
  mesh = sharding.make_mesh()
  repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  step8 = jax.jit(functools.partial(steps.train_step, networks=nets, weights=weights),
                  in_shardings=(repl, data, repl), out_shardings=(repl, repl))
  s1, s8 = state, jax.device_put(state, repl)
  t8 = jax.device_put(t_vars, repl)
  for seed in (0, 1):  # Two steps: the second starts from updated BatchNorm statistics.
    s1, m1 = step(s1, random_batch(seed), t_vars)
    s8, m8 = step8(s8, sharding.to_global_batch(random_batch(seed), mesh), t8)
  assert len(m8['loss/total'].sharding.device_set) == 8
  (s1, m1), (s8, m8) = jax.device_get(((s1, m1), (s8, m8)))
  for key in m1:
    np.testing.assert_allclose(m8[key], m1[key], rtol=2e-5, atol=1e-7, err_msg=key)
  # Float32 reductions run in another order over 8 shards: compare each collection at the scale
  # of its whole tree (single near-zero entries, e.g. Adam-updated biases, are noise-dominated).
  def tree_rel(a, b):
    diff = max(float(np.abs(np.subtract(x, y, dtype=np.float64)).max())
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    return diff / max(float(np.abs(x).max()) for x in jax.tree.leaves(a))
  for player in ('student', 'disc_aux', 'disc_main'):
    p1, p8 = getattr(s1, player), getattr(s8, player)
    for collection in ('params', 'batch_stats', 'opt_state'):
      if jax.tree.leaves(getattr(p1, collection)):
        assert tree_rel(getattr(p1, collection), getattr(p8, collection)) < 1e-4, (
            player, collection)
