"""The training state: every trainable player and the loop counters in one pytree.

The frozen teacher is deliberately not part of it: it is loaded from its own checkpoint, passed to
the step as a separate argument and never saved again (big_vision's distillation trainer does the
same).
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
  """
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self):
    """The `{'params', 'batch_stats'}` collections for `Module.apply`."""
    if self.batch_stats:
      return {'params': self.params, 'batch_stats': self.batch_stats}
    return {'params': self.params}


class TrainState(flax.struct.PyTreeNode):
  """Student, two discriminators, step counter and RNG: what a checkpoint holds.

  Attributes:
    student: the segmentation network being trained (the student when distilling, the adapted
      network itself in adaptation stages).
    disc_aux: discriminator on the auxiliary ("feature-level") output.
    disc_main: discriminator on the main output.
    step: int32 scalar, the number of completed updates; drives the poly schedules.
    rng: uint32 PRNG key, checkpointed with the rest. The DAKD step draws no randomness today;
      stochastic extensions (dropout, on-device augmentation) must use
      `jax.random.fold_in(rng, step)` so that a resumed run draws what an uninterrupted one would.
  """
  student: ModelState
  disc_aux: ModelState
  disc_main: ModelState
  step: jax.Array
  rng: jax.Array


def create_model_state(variables, tx):
  """Wraps initial `{'params', 'batch_stats'?}` variables with a fresh optimiser state."""
  params = variables['params']
  return ModelState(params=params, batch_stats=variables.get('batch_stats', {}),
                    opt_state=tx.init(params))


def create_train_state(student_variables, disc_aux_variables, disc_main_variables, student_tx,
                       disc_tx, rng):
  """Assembles a step-0 `TrainState`; pure, so it can run under `jax.jit` with shardings."""
  return TrainState(
      student=create_model_state(student_variables, student_tx),
      disc_aux=create_model_state(disc_aux_variables, disc_tx),
      disc_main=create_model_state(disc_main_variables, disc_tx),
      step=jnp.zeros((), jnp.int32),
      rng=rng)
