"""The generic step with each method: loss terms, gradient isolation, update order, parallelism."""

import dataclasses
import functools

from configs import tiny
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dakd_jax import config as config_lib
from dakd_jax import experiment
from dakd_jax import sharding
from dakd_jax import steps
from dakd_jax import train as train_lib
from dakd_jax.methods import base
from dakd_jax.tools import benchmark

pytestmark = pytest.mark.slow  # Every test here compiles whole training steps.

BASE_TERMS = {'src/seg_main', 'src/seg_aux', 'tgt/adv_aux', 'tgt/adv_main'}
DISTILL_TERMS = {'kl_main', 'kl_aux', 'mse', 'pseudo_ce'}


def stage_of(name='distill_c', **overrides):
  """A stage of configs/tiny.py (32x64, batch 8) with dotted-key overrides of its config."""
  config = tiny.get_config()
  config.stages[name].optim.d_lr = 1e-3
  config.update_from_flattened_dict(overrides)
  return benchmark.stage_spec(config, name), experiment.run_settings(config)


def batch_of(stage, seed=0):
  return benchmark.random_batch(stage, 19, seed)


@functools.cache
def built(name='distill_c', devices=1, **overrides):
  """The stage's jitted step and state on `devices` devices (compiled once per session)."""
  stage, run = stage_of(name, **overrides)
  variables = train_lib.random_variables(stage, run, frozen=True)
  b = train_lib.build_stage(stage, run, variables,
                            mesh=sharding.make_mesh(jax.devices()[:devices]))
  # The same step without donating the state: the tests run several steps from one state.
  repl = sharding.replicated(b.mesh)
  b.step_fn = jax.jit(functools.partial(steps.train_step, program=b.program),
                      in_shardings=(repl, sharding.batch_sharding(b.mesh), repl),
                      out_shardings=(repl, repl))
  return stage, b


def traced_metrics(stage, b):
  """The step's metrics, traced only (enough to see which terms exist)."""
  fn = functools.partial(steps.train_step, program=b.program)
  return jax.eval_shape(fn, b.state, batch_of(stage), b.frozen_variables)[1]


def loss_terms(metrics, players=('disc_aux', 'disc_main')):
  return {k[len('loss/'):] for k in metrics if k.startswith('loss/')} - {'total', *players}


@pytest.mark.parametrize('paradigm,domains', [('a', {'src'}), ('b', {'tgt'}),
                                              ('c', {'src', 'tgt'}), ('d', {'tgt'})])
def test_each_paradigm_has_exactly_its_terms(paradigm, domains):
  stage, b = built(f'distill_{paradigm}')
  assert stage.method.paradigm == paradigm
  metrics = traced_metrics(stage, b)
  assert loss_terms(metrics) == BASE_TERMS | {f'{d}/{t}' for d in domains for t in DISTILL_TERMS}
  assert {'loss/disc_aux', 'loss/disc_main'} <= set(metrics)


def test_loss_terms_are_positive_and_sum_to_the_total():
  stage, b = built()
  _, metrics = b.step_fn(b.state, b.global_batch(batch_of(stage)), b.frozen_variables)
  terms = [float(v) for k, v in metrics.items() if k.count('/') == 2]
  assert len(terms) == len(BASE_TERMS) + 2 * len(DISTILL_TERMS)
  assert all(np.isfinite(terms)) and all(t > 0 for t in terms)
  np.testing.assert_allclose(float(metrics['loss/total']), sum(terms), rtol=1e-5)


@pytest.mark.parametrize('name, method, terms, players', [
    ('student', 'adaptsegnet', BASE_TERMS, {'disc_aux', 'disc_main'}),
    ('student', 'advent', BASE_TERMS, {'disc_aux', 'disc_main'}),
    ('source_only', 'source_only', {'src/seg_main', 'src/seg_aux'}, set()),
])
def test_adaptation_methods_terms_and_players(name, method, terms, players):
  stage, b = built(name, **{f'stages.{name}.method': method})
  metrics = traced_metrics(stage, b)
  assert loss_terms(metrics, players) == terms
  assert set(b.state.players) == players
  assert {k[len('loss/'):] for k in metrics if k.startswith('loss/disc')} == players
  assert ('target_image' in batch_of(stage)) == (method != 'source_only')


def test_minent_terms_without_players():
  config = tiny.get_config()
  config_lib.set_method(config.stages.student, 'minent')  # MinEnt has options of its own.
  stage, run = benchmark.stage_spec(config, 'student'), experiment.run_settings(config)
  b = train_lib.build_stage(stage, run, train_lib.random_variables(stage, run),
                            mesh=sharding.make_mesh(jax.devices()[:1]))
  metrics = traced_metrics(stage, b)
  assert loss_terms(metrics, ()) == {'src/seg_main', 'src/seg_aux', 'tgt/ent_aux', 'tgt/ent_main'}
  assert not b.state.players


def test_advent_discriminators_see_self_information():
  adaptsegnet, _ = stage_of('student')
  advent, _ = stage_of('student', **{'stages.student.method': 'advent'})
  logits = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 2, 19)) * 3
  probs = jax.nn.softmax(logits)
  np.testing.assert_allclose(adaptsegnet.method.discriminator_input(logits), probs, rtol=1e-6)
  info = advent.method.discriminator_input(logits)
  np.testing.assert_allclose(info, -probs * jnp.log2(probs + 1e-30) / jnp.log2(19.0), rtol=1e-5)


def test_gamma_scales_target_terms_only():
  """DAKD's terms on fixed outputs: gamma scales exactly the target distillation terms."""
  logits = lambda seed: jax.random.normal(jax.random.PRNGKey(seed), (2, 8, 8, 19))
  outputs = {d: {'aux': logits(i), 'main': logits(i + 2)} for i, d in
             enumerate(('source', 'target'))}
  teacher = {d: {'aux': logits(i + 4), 'main': logits(i + 6)} for i, d in
             enumerate(('source', 'target'))}
  batch = {'source_label': jnp.zeros((2, 8, 8), jnp.int32), 'rng': jax.random.PRNGKey(0)}
  players = {name: (lambda x: x[..., :1]) for name in ('disc_aux', 'disc_main')}
  terms = {}
  for gamma in (1.0, 0.25):
    stage, _ = stage_of(**{'stages.distill_c.options.gamma': gamma})
    terms[gamma], _ = stage.method.network_terms(outputs, batch, players, teacher)
  assert set(terms[1.0]) == BASE_TERMS | {f'{d}/{t}' for d in ('src', 'tgt')
                                          for t in DISTILL_TERMS}
  for name, value in terms[1.0].items():
    scale = 0.25 if name.startswith('tgt/') and name[4:] in DISTILL_TERMS else 1.0
    np.testing.assert_allclose(float(terms[0.25][name]), scale * float(value), rtol=1e-6)
    assert float(value) > 0, name


@pytest.mark.parametrize('teacher_bn', ['eval', 'train'])
def test_no_gradient_reaches_the_teacher(teacher_bn):
  stage, b = built(**{'stages.distill_c.options.teacher_bn': teacher_bn})
  # The step adds this step's key to the batch.
  batch = {**jax.tree.map(jnp.asarray, batch_of(stage)), 'rng': jax.random.PRNGKey(0)}

  def total_loss(teacher_params):
    frozen = {'teacher': {**b.frozen_variables['teacher'], 'params': teacher_params}}
    frozen_nets = {'teacher': base.FrozenNetwork(b.program.frozen['teacher'],
                                                       frozen['teacher'])}
    teacher = stage.method.frozen_outputs(frozen_nets, batch)
    key = jax.random.PRNGKey(1)
    inputs, context, _ = stage.method.prepare(b.state, batch, teacher, key, b.program.network)
    return steps.network_loss(b.state.network.params, b.state, b.program, batch, inputs, context,
                              key)[0]

  grads = jax.jit(jax.grad(total_loss))(b.frozen_variables['teacher']['params'])
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_frozen_networks_run_in_their_own_precision():
  """`frozen_dtype` puts the teacher's convolutions, and only those, in bf16."""
  def bf16_convolutions(frozen_dtype):
    stage, b = built(frozen_dtype=frozen_dtype)
    text = b.step_fn.lower(b.state, b.global_batch(batch_of(stage)),
                           b.frozen_variables).as_text()
    convs = [line for line in text.splitlines() if 'stablehlo.convolution' in line]
    return sum('bf16' in line for line in convs)

  stage, b = built()
  images = jnp.asarray(batch_of(stage)['source_image'])
  teacher = b.program.frozen['teacher']
  per_pass = jax.jit(teacher.apply).lower(b.frozen_variables['teacher'], images).as_text().count(
      'stablehlo.convolution')
  assert bf16_convolutions('bfloat16') == 2 * per_pass  # source + target
  assert bf16_convolutions('') == 0
  # The bf16 teacher's logits follow the float32 teacher's.
  low = base.FrozenNetwork(teacher.clone(dtype=jnp.bfloat16), b.frozen_variables['teacher'])
  ref = base.FrozenNetwork(teacher, b.frozen_variables['teacher'])
  low, ref = low(images)['main'], ref(images)['main']
  assert low.dtype == jnp.float32
  assert float(jnp.linalg.norm(low - ref) / jnp.linalg.norm(ref)) < 3e-2


def test_players_do_not_move_each_other():
  """Network and discriminator updates are independent and both use the pre-update weights."""
  stage, b = built('student')
  batch = b.global_batch(batch_of(stage))
  full, _ = b.step_fn(b.state, batch, b.frozen_variables)
  frozen_tx = optax.set_to_zero()
  empty = frozen_tx.init(None)
  program = b.program
  run = lambda program, state: jax.jit(functools.partial(steps.train_step, program=program))(
      state, batch, b.frozen_variables)[0]
  only_network = run(
      dataclasses.replace(program, player_txs={n: frozen_tx for n in program.players}),
      b.state.replace(players={n: p.replace(opt_state=empty) for n, p in b.state.players.items()}))
  only_players = run(dataclasses.replace(program, network_tx=frozen_tx),
                     b.state.replace(network=b.state.network.replace(opt_state=empty)))
  same = lambda a, c: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, c)))
  # Freezing the discriminators changes nothing in the network update, and vice versa.
  assert same(only_network.network.params, full.network.params)
  for name in ('disc_aux', 'disc_main'):
    assert same(only_players.players[name].params, full.players[name].params)
    assert same(only_network.players[name].params, b.state.players[name].params)
    assert not same(full.players[name].params, b.state.players[name].params)
  assert same(only_players.network.params, b.state.network.params)
  assert not same(full.network.params, b.state.network.params)


def _tree_rel(a, b):
  """Largest difference over a tree, relative to its largest entry (float32 summation noise
  over 8 shards; single near-zero entries, e.g. Adam-updated biases, are noise-dominated)."""
  diff = max(float(np.abs(np.subtract(x, y, dtype=np.float64)).max())
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  return diff / max(float(np.abs(x).max()) for x in jax.tree.leaves(a))


def _two_steps(b, stage, step_fn=None):
  """State and metrics after two steps (the second starts from updated BatchNorm statistics)."""
  state = b.state
  for seed in (0, 1):
    state, metrics = (step_fn or b.step_fn)(state, b.global_batch(batch_of(stage, seed)),
                                            b.frozen_variables)
  return state, metrics


def _assert_same_run(one, eight, start):
  """Metrics, the network's variables and optimiser state, and what the steps changed in each
  player, of two runs of `_two_steps` from `start`."""
  (s1, m1), (s8, m8), s0 = jax.device_get((one, eight, start))
  for key in m1:
    np.testing.assert_allclose(m8[key], m1[key], rtol=2e-5, atol=1e-7, err_msg=key)
  for collection in ('params', 'batch_stats', 'opt_state'):
    assert _tree_rel(getattr(s1.network, collection), getattr(s8.network, collection)) < 1e-4, (
        collection)
  # The players are compared by their updates, relative to the largest one. At initialisation a
  # discriminator's gradient is a difference of nearly equal source and target sums, and Adam
  # divides it by its own size: on JAX 0.12 images changed by one float32 ulp move disc_main's
  # parameters by 2e-4 of their largest entry and its Adam moments by 1.4e-3 (as much as going
  # from one device to eight does), while the network's parameters agree to 1e-7.
  for name in s1.players:
    update = lambda s: jax.tree.map(np.subtract, s.players[name].params, s0.players[name].params)
    assert _tree_rel(update(s1), update(s8)) < 5e-2, name


def test_one_device_equals_eight_devices():
  assert jax.device_count() == 8
  stage, b8 = built(devices=8)
  _, b1 = built()
  eight = _two_steps(b8, stage)
  assert len(eight[1]['loss/total'].sharding.device_set) == 8
  _assert_same_run(_two_steps(b1, stage), eight, b1.state)


@pytest.mark.usefixtures('xla_optimised')
def test_per_device_batchnorm_equals_groups_on_one_device():
  """bn_sync='per_device' on 8 devices = BatchNorm statistics per 1-image group on one device.

  Compiled with XLA's optimisations: statistics over single 32x64 images leave near-constant
  channels whose backward pass amplifies float32 rounding, and unoptimised XLA:CPU programs round
  the grouped one-device step differently from the eight-device one on some CPUs (AMD EPYC,
  measured: gradient norms 1.2e-3 apart after one step, 1.4e-2 after two), where the optimised
  programs agree to 3e-7.
  """
  stage, b8 = built('student', devices=8, bn_sync='per_device')
  eight = _two_steps(b8, stage)
  _, b1 = built('student', bn_sync='per_device')  # One device: one statistics group ...
  assert b1.program.network.bn_groups == 1 and b8.program.network.bn_groups == 8
  grouped = dataclasses.replace(b1.program, network=b1.program.network.clone(bn_groups=8))
  grouped_step = jax.jit(functools.partial(steps.train_step, program=grouped))  # ... made eight.
  # (layers.BatchNorm's own test shows that the groups change the normalisation.)
  _assert_same_run(_two_steps(b1, stage, grouped_step), eight, b1.state)
