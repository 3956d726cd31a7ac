"""The generic step's method hooks: a method state carried in the TrainState, `prepare` choosing the
network's inputs, and per-step random keys (dropout included) drawn from the state's rng."""

import dataclasses
import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dakd_jax import losses
from dakd_jax import steps
from dakd_jax.methods import base
from dakd_jax.state import create_train_state


class TinyNet(nn.Module):
  """A 1x1 conv with channel dropout: {'main': [N, H, W, 3]}."""
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, train=False):
    y = nn.Conv(self.num_classes, (1, 1))(x)
    return {'main': nn.Dropout(0.5, broadcast_dims=(1, 2), deterministic=not train)(y)}


@dataclasses.dataclass(frozen=True)
class Counting(base.Method):
  """Counts its steps, keeps its last random draw, forwards the doubled source images."""
  name: ClassVar[str] = 'counting'

  @property
  def uses_target(self):
    return False

  def init_state(self, network_variables, network):
    return {'count': jnp.zeros((), jnp.int32), 'draw': jnp.zeros(())}

  def prepare(self, state, batch, frozen_outputs, key, network):
    draw = jax.random.uniform(key)
    return ({'doubled': 2 * batch['source_image']}, draw,
            {'count': state.method_state['count'] + 1, 'draw': draw})

  def network_terms(self, outputs, batch, players, frozen_outputs):
    assert set(outputs) == {'doubled'}
    return {'src/seg': losses.segmentation_cross_entropy(outputs['doubled']['main'],
                                                         batch['source_label'])}, {}


def test_method_state_prepare_and_step_keys():
  net, method, tx = TinyNet(), Counting(), optax.sgd(0.1)
  batch = {'source_image': jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 5)),
           'source_label': jnp.ones((2, 4, 4), jnp.int32)}
  variables = net.init(jax.random.PRNGKey(1), batch['source_image'])
  program = steps.StepProgram(method=method, network=net, network_tx=tx, players={},
                              player_txs={}, frozen={})
  step = jax.jit(functools.partial(steps.train_step, program=program))
  state0 = create_train_state(variables, {}, tx, {}, jax.random.PRNGKey(2),
                              init_method_state=functools.partial(method.init_state, network=net))
  state1, m1 = step(state0, batch, {})
  state2, m2 = step(state1, batch, {})
  assert int(state2.method_state['count']) == 2
  assert float(state1.method_state['draw']) != float(state2.method_state['draw'])
  assert float(m1['loss/total']) != float(m2['loss/total'])
  again, m1_again = step(state0, batch, {})  # Same state, same draws: resume is exact.
  assert float(m1_again['loss/total']) == float(m1['loss/total'])
  assert float(again.method_state['draw']) == float(state1.method_state['draw'])
  other, m_other = step(state0.replace(rng=jax.random.PRNGKey(3)), batch, {})
  assert float(other.method_state['draw']) != float(state1.method_state['draw'])
  # Dropout draws from the step key: another rng, another loss on the same weights.
  assert float(m_other['loss/total']) != float(m1['loss/total'])
  plain = create_train_state(variables, {}, tx, {}, jax.random.PRNGKey(2))
  assert plain.method_state == {}
  # The default `prepare`: source images (then target ones if used), the state unchanged.
  inputs, context, kept = base.Method.prepare(Counting(), plain, batch, 'frozen', None, net)
  assert list(inputs) == ['source'] and context == 'frozen' and kept == {}
  np.testing.assert_array_equal(inputs['source'], batch['source_image'])
