"""Optimisers and learning-rate schedules of the method (spec: method.md §1.2, §4.4).

Segmentation nets: SGD with momentum and weight decay coupled into the gradient, exactly as
`torch.optim.SGD` (the momentum buffer holds un-scaled gradients; optax's trace-then-scale is the
same recursion), with a poly learning rate set *before* each step. Discriminators: Adam with
betas (0.9, 0.99) and the same poly decay.

Config fields read (an `ml_collections.ConfigDict`, e.g. `config.optim`):
  lr               base learning rate of the segmentation net (2.5e-4 in the released scripts).
  momentum         SGD momentum (0.9).
  weight_decay     coupled L2 weight decay (5e-4).
  power            exponent of the poly schedule (0.9), shared by every optimiser.
  head_lr_mult     learning-rate multiplier for the classifier heads (1.0 = torch's single param
                   group as in the DAKD scripts; 10.0 for DeepLab-v2 as in AdaptSegNet).
  freeze_bn_affine whether BatchNorm scale/bias are frozen (excluded from the optimiser).
  d_lr             base learning rate of the discriminators' Adam (1e-4).
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dakd_jax import models

# Labels of the three parameter groups of the segmentation optimiser.
_BODY, _HEAD, _FROZEN = "body", "head", "frozen"

# Adam settings of every discriminator in AdaptSegNet/ADVENT/DAKD.
_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.99, 1e-8


def poly_schedule(base_lr: float, num_steps: int, power: float = 0.9) -> optax.Schedule:
  """`lr_i = base_lr * (1 - i / num_steps) ** power`, `i` = 0-based updates done so far.

  The count is clipped to `num_steps`, so the rate stays 0 after the last step.
  """
  if num_steps <= 0:
    raise ValueError(f"num_steps={num_steps}: the poly schedule needs a positive step count")
  return optax.polynomial_schedule(
      init_value=base_lr, end_value=0.0, power=power, transition_steps=num_steps)


def _coupled_sgd(schedule: optax.Schedule, momentum: float,
                 weight_decay: float) -> optax.GradientTransformation:
  # Decay first: torch adds `weight_decay * p` to the gradient before the momentum buffer.
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.sgd(schedule, momentum=momentum or None))


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def parameter_groups(params: Any, head_modules: Sequence[str],
                     freeze_bn_affine: bool) -> Any:
  """Labels every leaf of `params` with its optimiser group: 'body', 'head' or 'frozen'.

  A leaf is 'head' when its top-level module is in `head_modules`. With `freeze_bn_affine`, the
  `scale`/`bias` of normalisation layers are 'frozen'; a module is a normalisation layer when it
  owns a `scale` param (convs and denses have `kernel`), which catches BN whatever its name.
  """
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  paths = [_path_names(path) for path, _ in leaves]
  norm_modules = {p[:-1] for p in paths if p[-1] == "scale"}
  heads = set(head_modules)

  def label(path, _):
    names = _path_names(path)
    if freeze_bn_affine and names[:-1] in norm_modules and names[-1] in ("scale", "bias"):
      return _FROZEN
    return _HEAD if names[0] in heads else _BODY

  return jax.tree_util.tree_map_with_path(label, params)


def make_segmentation_optimizer(
    cfg: ml_collections.ConfigDict, num_steps: int, params: Any,
    head_modules: Sequence[str] | None = None) -> optax.GradientTransformation:
  """SGD(momentum, coupled WD) with poly lr, head lr multiplier and optional frozen BN affine.

  Args:
    cfg: optimiser config; reads `lr`, `momentum`, `weight_decay`, `power`, `head_lr_mult`,
      `freeze_bn_affine` (see the module docstring).
    num_steps: the poly schedule's horizon (the stage's number of iterations).
    params: the parameter tree to optimise (used to label the groups; not modified).
    head_modules: top-level module names that get `head_lr_mult`; defaults to
      `dakd_jax.models.HEAD_MODULES`.

  Returns:
    An optax transformation whose updates are to be added to the params. Frozen leaves get zero
    updates, no momentum state and no weight decay (torch: excluded from the optimiser).
  """
  if head_modules is None:
    head_modules = models.HEAD_MODULES
  labels = parameter_groups(params, head_modules, cfg.freeze_bn_affine)
  if cfg.head_lr_mult != 1.0 and _HEAD not in jax.tree.leaves(labels):
    raise ValueError(f"optim.head_lr_mult={cfg.head_lr_mult} but no parameter lies under the "
                     f"head modules {sorted(head_modules)}")
  transforms = {
      _BODY: _coupled_sgd(poly_schedule(cfg.lr, num_steps, cfg.power),
                          cfg.momentum, cfg.weight_decay),
      _HEAD: _coupled_sgd(poly_schedule(cfg.lr * cfg.head_lr_mult, num_steps, cfg.power),
                          cfg.momentum, cfg.weight_decay),
      _FROZEN: optax.set_to_zero(),
  }
  return optax.multi_transform(transforms, labels)


def make_discriminator_optimizer(cfg: ml_collections.ConfigDict,
                                 num_steps: int) -> optax.GradientTransformation:
  """Adam(b1=0.9, b2=0.99, eps=1e-8), no weight decay, lr `cfg.d_lr` poly-decayed (`cfg.power`)."""
  return optax.adam(poly_schedule(cfg.d_lr, num_steps, cfg.power),
                    b1=_ADAM_B1, b2=_ADAM_B2, eps=_ADAM_EPS)


def learning_rates(cfg: ml_collections.ConfigDict, num_steps: int,
                   step: jax.Array | int) -> dict[str, jax.Array]:
  """The rates used by update number `step` (0-based): `lr`, `head_lr`, `d_lr`. Jittable."""
  step = jnp.asarray(step)
  lr = poly_schedule(cfg.lr, num_steps, cfg.power)(step)
  return {
      "lr": lr,
      "head_lr": lr * cfg.head_lr_mult,
      "d_lr": poly_schedule(cfg.d_lr, num_steps, cfg.power)(step),
  }
