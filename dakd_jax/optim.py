"""Optimisers and learning-rate schedules of the method (spec: method.md §1.2, §4.4).

Segmentation nets: SGD with momentum and weight decay coupled into the gradient, exactly as
`torch.optim.SGD` (the momentum buffer holds un-scaled gradients; optax's trace-then-scale is the
same recursion), with a poly learning rate set *before* each step; or, with `optimizer='adam'`
(DiGA's translator), torch's Adam with its coupled L2 weight decay. Parameter groups (body, heads,
frozen BatchNorm affine) are the network's own declaration (`models.parameter_groups`); the stage
chooses only the rates. Discriminators: Adam with betas (0.9, 0.99) (the stage's `betas`) and the
same poly decay.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dakd_jax import errors
from dakd_jax import models

_ADAM_EPS = 1e-8  # torch's default, added to the square root of the second moment.
D_OPTIMIZERS = ('adam', 'sgd')
NETWORK_OPTIMIZERS = ('sgd', 'adam')


@dataclasses.dataclass(frozen=True)
class OptimSpec:
  """The optimisers of one stage.

  Attributes:
    lr: base learning rate of the trained network (SGD 2.5e-4 in the released scripts).
    momentum: SGD momentum (0.9).
    weight_decay: coupled L2 weight decay (5e-4), added to the gradient (SGD and Adam, as torch).
    power: exponent of the poly schedule (0.9), shared by every optimiser.
    head_lr_mult: learning-rate multiplier of the network's heads (1 = torch's single parameter
      group as in the DAKD scripts; 10 for DeepLab-v2 as in AdaptSegNet/ADVENT).
    d_lr: base learning rate of the discriminators' optimiser (1e-4).
    d_optimizer: 'adam' (AdaptSegNet/ADVENT/DAKD) | 'sgd' (SKD: the network's momentum and
      coupled weight decay).
    optimizer: the trained network's optimiser, 'sgd' (segmentation) | 'adam' (DiGA's translator).
    betas: (b1, b2) of every Adam of the stage ((0.9, 0.99): the AdaptSegNet/ADVENT/DAKD
      discriminators; (0.5, 0.999): DiGA's translator and its discriminators).
  """
  lr: float = 2.5e-4
  momentum: float = 0.9
  weight_decay: float = 5e-4
  power: float = 0.9
  head_lr_mult: float = 1.0
  d_lr: float = 1e-4
  d_optimizer: str = 'adam'
  optimizer: str = 'sgd'
  betas: tuple[float, float] = (0.9, 0.99)

  def __post_init__(self):
    for key, value, valid in (('d_optimizer', self.d_optimizer, D_OPTIMIZERS),
                              ('optimizer', self.optimizer, NETWORK_OPTIMIZERS)):
      if value not in valid:
        raise errors.UserError(f'optim.{key}: expected one of {valid}, got {value!r}')
    betas = tuple(self.betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
      raise errors.UserError(f'optim.betas: expected (b1, b2) in [0, 1), got {self.betas!r}')
    object.__setattr__(self, 'betas', betas)


def poly_schedule(base_lr: float, num_steps: int, power: float = 0.9) -> optax.Schedule:
  """`lr_i = base_lr * (1 - i / num_steps) ** power`, `i` = 0-based updates done so far.

  The count is clipped to `num_steps`, so the rate stays 0 after the last step.
  """
  if num_steps <= 0:
    raise ValueError(f'num_steps={num_steps}: the poly schedule needs a positive step count')
  return optax.polynomial_schedule(
      init_value=base_lr, end_value=0.0, power=power, transition_steps=num_steps)


def _coupled_sgd(schedule: optax.Schedule, momentum: float,
                 weight_decay: float) -> optax.GradientTransformation:
  # Decay first: torch adds `weight_decay * p` to the gradient before the momentum buffer.
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.sgd(schedule, momentum=momentum or None))


def _adam(spec: OptimSpec, schedule: optax.Schedule,
          weight_decay: float = 0.0) -> optax.GradientTransformation:
  """torch's Adam (betas `spec.betas`, eps 1e-8) with coupled L2 `weight_decay`."""
  adam = optax.adam(schedule, b1=spec.betas[0], b2=spec.betas[1], eps=_ADAM_EPS)
  return optax.chain(optax.add_decayed_weights(weight_decay), adam) if weight_decay else adam


def _network_optimizer(spec: OptimSpec, schedule: optax.Schedule) -> optax.GradientTransformation:
  if spec.optimizer == 'adam':
    return _adam(spec, schedule, spec.weight_decay)
  return _coupled_sgd(schedule, spec.momentum, spec.weight_decay)


def make_segmentation_optimizer(spec: OptimSpec, schedule_steps: int,
                                labels: Any) -> optax.GradientTransformation:
  """The trained network's optimiser (SGD with momentum and coupled WD, or Adam: `spec.optimizer`)
  with poly lr, the head multiplier and frozen leaves.

  Args:
    spec: the stage's optimiser settings.
    schedule_steps: the poly schedule's horizon (may exceed the steps actually run).
    labels: the parameter tree labelled `models.BODY | HEAD | FROZEN`
      (`models.parameter_groups`).

  Returns:
    An optax transformation whose updates are to be added to the params. FROZEN leaves get zero
    updates, no momentum state and no weight decay (torch: excluded from the optimiser).
  """
  if spec.head_lr_mult != 1.0 and models.HEAD not in jax.tree.leaves(labels):
    raise ValueError(f'head_lr_mult={spec.head_lr_mult} but the network declares no head '
                     'parameters')
  transforms = {
      models.BODY: _network_optimizer(spec, poly_schedule(spec.lr, schedule_steps, spec.power)),
      models.HEAD: _network_optimizer(
          spec, poly_schedule(spec.lr * spec.head_lr_mult, schedule_steps, spec.power)),
      models.FROZEN: optax.set_to_zero(),
  }
  return optax.multi_transform(transforms, labels)


def make_discriminator_optimizer(spec: OptimSpec,
                                 schedule_steps: int) -> optax.GradientTransformation:
  """Adam(`spec.betas`, eps=1e-8), no weight decay, lr `spec.d_lr` poly-decayed; or with
  `d_optimizer='sgd'` SGD with the stage's momentum and coupled weight decay (SKD)."""
  if spec.d_optimizer == 'sgd':
    return _coupled_sgd(poly_schedule(spec.d_lr, schedule_steps, spec.power), spec.momentum,
                        spec.weight_decay)
  return _adam(spec, poly_schedule(spec.d_lr, schedule_steps, spec.power))


def learning_rates(spec: OptimSpec, schedule_steps: int, step: jax.Array | int,
                   with_discriminators: bool = True) -> dict[str, jax.Array]:
  """The rates used by update number `step` (0-based): `lr`, `head_lr` (and `d_lr`). Jittable."""
  step = jnp.asarray(step)
  lr = poly_schedule(spec.lr, schedule_steps, spec.power)(step)
  rates = {'lr': lr, 'head_lr': lr * spec.head_lr_mult}
  if with_discriminators:
    rates['d_lr'] = poly_schedule(spec.d_lr, schedule_steps, spec.power)(step)
  return rates
