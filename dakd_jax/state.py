"""The training state: the trained network, the method's players and the loop counters.

Frozen networks (a teacher) are deliberately not part of it: they are loaded from their own
variables directories, passed to the step as a separate argument and never saved again
(big_vision's distillation trainer does the same).
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp


class ModelState(flax.struct.PyTreeNode):
  """One network's trainable state.

  Attributes:
    params: the parameter tree (float32).
    batch_stats: BatchNorm running statistics (`{}` for networks without BatchNorm).
    opt_state: the optimiser state of `params`.
    collections: any other non-trainable collections, `{name: tree}` (e.g. the power-iteration
      vectors of spectral-norm layers, 'spectral'); `{}` for most networks.
  """
  params: Any
  batch_stats: Any
  opt_state: Any
  collections: Any = flax.struct.field(default_factory=dict)

  @property
  def variables(self):
    """The `{'params', 'batch_stats', *collections}` for `Module.apply` (empty ones left out)."""
    variables = {'params': self.params, **self.collections}
    if self.batch_stats:
      variables['batch_stats'] = self.batch_stats
    return variables

  def with_state(self, state):
    """A copy whose non-trainable collections are `state` (`{name: tree}`, params excluded)."""
    state = dict(state)
    return self.replace(batch_stats=state.pop('batch_stats', self.batch_stats),
                        collections={**self.collections, **state})


class TrainState(flax.struct.PyTreeNode):
  """What a checkpoint holds: the trained network, the players, the step counter and the RNG.

  Attributes:
    network: the segmentation network being trained (the student when distilling).
    players: `{name: ModelState}` of the method's players (e.g. `disc_aux`, `disc_main`).
    step: int32 scalar, the number of completed updates; drives the poly schedules.
    rng: uint32 PRNG key, checkpointed with the rest. The step draws its randomness (dropout,
      a method's on-device augmentation) from `jax.random.fold_in(rng, step)`, so that a resumed
      run draws what an uninterrupted one would.
    method_state: what the method carries from step to step besides gradients and optimisers
      (DiGA's EMA teacher), a pytree (`{}` for most methods); `Method.init_state` builds it and
      `Method.prepare` updates it.
  """
  network: ModelState
  players: dict[str, ModelState]
  step: jax.Array
  rng: jax.Array
  method_state: Any = flax.struct.field(default_factory=dict)


def create_model_state(variables, tx):
  """Wraps initial `{'params', 'batch_stats'?, ...}` variables with a fresh optimiser state."""
  params = variables['params']
  return ModelState(params=params, batch_stats=variables.get('batch_stats', {}),
                    opt_state=tx.init(params),
                    collections={k: v for k, v in variables.items()
                                 if k not in ('params', 'batch_stats')})


def create_train_state(network_variables, player_variables, network_tx, player_txs, rng,
                       init_method_state=None):
  """Assembles a step-0 `TrainState`; pure, so it can run under `jax.jit` with shardings.

  `player_variables` and `player_txs` are `{name: ...}` dicts with the same keys;
  `init_method_state(network_variables)` builds the method's state (default `{}`; the stage binds
  `Method.init_state` to its network module).
  """
  return TrainState(
      network=create_model_state(network_variables, network_tx),
      players={name: create_model_state(v, player_txs[name])
               for name, v in player_variables.items()},
      step=jnp.zeros((), jnp.int32),
      rng=rng,
      method_state=init_method_state(network_variables) if init_method_state else {})
