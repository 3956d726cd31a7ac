"""The method interface: what a method declares, and what the generic step gives it.

A method is a frozen dataclass. Its fields are its options (a stage's `options` in the config,
with the dataclass defaults as the official values), so one definition is the option schema, the
defaults and the static, hashable description the jitted step is built from. It declares:

- `players(num_classes)`: the networks trained beside the segmentation network by their own
  optimiser (AdaptSegNet's two discriminators), `{name: Player}`;
- `frozen`: the names of the frozen networks a stage must be given (DAKD's `'teacher'`);
- `uses_target` / `needs_features`: whether the network is also forwarded on the target batch,
  and whether its tapped feature maps are needed;
- `pseudo_labeler` / `state_passes`: what runs once before the stage's first step
  (`dakd_jax.offline`): a frozen network labelling the target training split (the step's
  `batch['target_label']`), and passes of `state_pass` over its images initialising the
  method state (DiGA's pseudo-labels and class centroids);
and computes, inside the one generic step (`dakd_jax.steps.train_step`):

- `frozen_outputs(frozen, batch)`: what the frozen networks contribute (outside the gradient);
- `prepare(state, batch, frozen_outputs, key, network)`: the images the network is forwarded on
  and the method's own state carried between steps (`init_state`; DiGA's EMA teacher);
- `network_terms(outputs, batch, players, frozen_outputs)`: the weighted loss terms of the
  segmentation network, `{'src/…' | 'tgt/…': scalar}` summed into its loss, plus the
  (gradient-stopped) inputs of every player's loss;
- `player_loss(name, apply, inputs)`: the loss of one player.

`players[name]` and `apply` are `PlayerCall`s: `call(x)` applies the player's current weights;
a player declared with `train=True` runs in training mode and updates its non-trainable
collections (BatchNorm statistics, spectral-norm vectors) at every call, in call order.

The step takes both gradients from the pre-update weights and then applies every update: the
official order of AdaptSegNet, ADVENT and DAKD.

Shapes: images `[N, H, W, 3]`, labels `[N, H, W]` int32 (255 = ignore), `batch['rng']` a PRNG
key of this step (for stochastic terms); `outputs[domain]` holds the network's `'aux'` and
`'main'` logits (and any other head's) upsampled (align corners) to the input size, float32
`[N, H, W, C]`, the same logits at stride 8 under `'stride8'` (`outputs[d]['stride8']['main']`),
plus `'aux_features'`/`'main_features'` at stride 8 when `needs_features` and the stage outputs
(`'attentions'`) of networks that return them.
"""

import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from dakd_jax import losses
from dakd_jax import models
from dakd_jax.models.layers import resize_align_corners

FEATURE_KEYS = ('aux_features', 'main_features', 'features', 'attentions')
STRIDE8_KEY = 'stride8'
DOMAINS = ('source', 'target')


@dataclasses.dataclass(frozen=True)
class Player:
  """A network trained beside the segmentation network (Adam, `d_lr`, same poly horizon).

  Attributes:
    arch: its `dakd_jax.models` registry name.
    input_channels: channels of its input (the registry's `num_classes` for discriminators).
    options: constructor options, as `(name, value)` pairs.
    train: applied in training mode inside the step (batch statistics; its mutable collections
      updated at every call), as a torch module kept in `train()` (SKD's discriminator).
  """
  arch: str
  input_channels: int
  options: tuple[tuple[str, Any], ...] = ()
  train: bool = False

  @property
  def spec(self) -> dict[str, Any]:
    """Its network spec, as a variables directory's model.json holds it."""
    return {'arch': self.arch, 'num_classes': self.input_channels, 'options': dict(self.options)}

  @property
  def module(self) -> nn.Module:
    return models.create_model(self.arch, self.input_channels, **dict(self.options))


def at_input_size(outputs: Mapping[str, Any], size) -> dict[str, Any]:
  """A network's outputs as the methods see them, all float32.

  Every logits output (every key but `FEATURE_KEYS`: 'aux', 'main' and e.g. MuHDi's specialist
  heads) is upsampled to `size` (H, W); feature maps (a map or a list of maps) are kept as they
  are; the stride-8 logits are also kept under `STRIDE8_KEY` (MuHDi distils them). Unused
  entries cost nothing under jit.
  """
  logits = {k: v.astype(jnp.float32) for k, v in outputs.items() if k not in FEATURE_KEYS}
  up = {k: resize_align_corners(v, size) for k, v in logits.items()}
  up.update({k: jax.tree.map(lambda x: x.astype(jnp.float32), outputs[k])
             for k in FEATURE_KEYS if k in outputs})
  up[STRIDE8_KEY] = logits
  return up


def with_features(module: nn.Module) -> nn.Module:
  """The same network returning its feature maps too (`return_features` is a module attribute,
  not a call argument)."""
  return module.clone(return_features=True)


class PlayerCall:
  """A player's forward bound to its variables (see the module docstring).

  `state` holds its non-trainable collections after the latest call; `apply(state, x)` is the
  pure form `-> (output, new_state)`, for calls inside inner transformations (the `jax.grad` of
  a gradient penalty), where the caller stores the returned state itself.
  """

  def __init__(self, module: nn.Module, variables: Mapping[str, Any], train: bool):
    self.module, self.train = module, train
    self.params = variables['params']
    self.state = {k: v for k, v in variables.items() if k != 'params'}

  def apply(self, state: Mapping[str, Any], x: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    variables = {'params': self.params, **state}
    if not self.train:
      return self.module.apply(variables, x), dict(state)
    out, updates = self.module.apply(variables, x, train=True, mutable=list(state))
    return out, {**state, **updates}

  def __call__(self, x: jax.Array) -> jax.Array:
    out, self.state = self.apply(self.state, x)
    return out


@dataclasses.dataclass(frozen=True)
class FrozenNetwork:
  """A frozen network bound to its variables: `__call__(images) -> outputs at input size`.

  No gradient ever reaches it. `train=True` normalises with the batch's statistics (the released
  DAKD teacher, never put in eval mode) without keeping the updated running statistics, and
  applies dropout with the key `rng` (needed by networks with dropout, e.g. PSPNet).
  """
  module: nn.Module
  variables: Any

  def __call__(self, images: jax.Array, *, train: bool = False, features: bool = False,
               rng: jax.Array | None = None) -> dict[str, jax.Array]:
    module = with_features(self.module) if features else self.module
    if train:
      rngs = {'dropout': rng} if rng is not None else None
      outputs, _ = module.apply(self.variables, images, train=True, mutable=['batch_stats'],
                                rngs=rngs)
    else:
      outputs = module.apply(self.variables, images, train=False)
    return jax.lax.stop_gradient(at_input_size(outputs, images.shape[1:3]))


def segmentation_terms(source: Mapping[str, jax.Array], labels: jax.Array,
                       lambda_seg_aux: float) -> dict[str, jax.Array]:
  """Source cross-entropy of the main head plus `lambda_seg_aux` x that of the aux head."""
  return {'src/seg_main': losses.segmentation_cross_entropy(source['main'], labels),
          'src/seg_aux': lambda_seg_aux * losses.segmentation_cross_entropy(source['aux'], labels)}


@dataclasses.dataclass(frozen=True)
class Method:
  """Base of every method; see the module docstring for the contract."""
  name: ClassVar[str] = ''
  frozen: ClassVar[tuple[str, ...]] = ()
  # The update order. False (AdaptSegNet, ADVENT, DAKD): the network's gradient is taken through
  # the current players, and the players learn from `network_terms`' inputs. True (CycleGAN /
  # MUNIT, DiGA's translator): the players first update on `player_inputs` of the current
  # network's gradient-stopped outputs, and the network's terms then apply the updated players.
  players_first: ClassVar[bool] = False

  @property
  def uses_target(self) -> bool:
    """Whether the step gets the target batch; the default `prepare` then forwards the network on
    it after the source batch (BN statistics: source first)."""
    return True

  @property
  def needs_features(self) -> bool:
    """Whether `outputs` must carry the network's feature maps."""
    return False

  @property
  def pseudo_labeler(self) -> str:
    """The frozen network that labels the target training split once, before the stage's first
    step (`dakd_jax.offline.write_pseudo_labels`, logits max-fused over `pseudo_label_scales`);
    the step then gets those labels, augmented with the images, as `batch['target_label']`.
    '' = no offline labels (the target stream gives images only)."""
    return ''

  pseudo_label_scales: ClassVar[tuple[float, ...]] = (1.0,)

  @property
  def state_passes(self) -> int:
    """Passes of `state_pass` over the target training split that initialise the method state
    before the stage's first step (`dakd_jax.offline.initial_method_state`); 0 = none."""
    return 0

  def state_pass(self, method_state: Any, network: nn.Module, variables: Mapping[str, Any],
                 images: jax.Array) -> Any:
    """The method state after one batch of those passes: `images` `[N, H, W, 3]` in file order,
    unaugmented, at the target stream's size; `network` with its step-0 variables, to be applied
    in inference mode."""
    raise NotImplementedError(f'{type(self).__name__} declares state_passes without state_pass')

  def players(self, num_classes: int) -> dict[str, Player]:
    del num_classes
    return {}

  def frozen_outputs(self, frozen: Mapping[str, FrozenNetwork], batch: Mapping[str, jax.Array]):
    del frozen, batch
    return None

  def init_state(self, network_variables: Any, network: nn.Module) -> Any:
    """The method's step-0 state (`TrainState.method_state`), from the network's variables and
    module."""
    del network_variables, network
    return {}

  def prepare(self, state: Any, batch: Mapping[str, jax.Array], frozen_outputs: Any,
              key: jax.Array, network: nn.Module) -> tuple[dict[str, jax.Array], Any, Any]:
    """What the network is forwarded on, before the gradient is taken.

    Args:
      state: the pre-update `TrainState` (its `method_state`, network variables and `step`).
      batch: the step's batch.
      frozen_outputs: `frozen_outputs(...)`.
      key: this step's PRNG key (`fold_in(state.rng, state.step)`).
      network: the trained segmentation module.

    Returns:
      `(inputs, context, method_state)`: `{name: images}` forwarded in order through the network
      (BatchNorm statistics updated in that order; `outputs[name]` in `network_terms`), what
      `network_terms` receives as its last argument, and the new method state. By default the
      source images, then the target images if `uses_target`; the frozen outputs; the state as is.
    """
    del key, network
    domains = DOMAINS if self.uses_target else DOMAINS[:1]
    return ({d: batch[f'{d}_image'] for d in domains}, frozen_outputs, state.method_state)

  def forward(self, network: nn.Module, variables: Mapping[str, Any],
              inputs: Mapping[str, jax.Array], key: jax.Array) -> tuple[dict[str, Any], Any]:
    """The trained network's training-mode forward on what `prepare` named.

    Args:
      network: the trained module.
      variables: its `{'params', 'batch_stats'}`.
      inputs: `{name: images}` from `prepare`, forwarded in order.
      key: PRNG key; forward `i` draws its dropout from `fold_in(key, i)`.

    Returns:
      `(outputs, batch_stats)`: by default `{name: at_input_size(outputs)}` (a segmentation
      network's logits upsampled, with its features when `needs_features`) and the BatchNorm
      statistics after the forwards, updated in order (source first, as torch).
    """
    network = with_features(network) if self.needs_features else network
    batch_stats = variables['batch_stats']
    outputs = {}
    for i, (name, images) in enumerate(inputs.items()):
      raw, updates = network.apply({'params': variables['params'], 'batch_stats': batch_stats},
                                   images, train=True, mutable=['batch_stats'],
                                   rngs={'dropout': jax.random.fold_in(key, i)})
      batch_stats = updates['batch_stats']
      outputs[name] = at_input_size(raw, images.shape[1:3])
    return outputs, batch_stats

  def player_inputs(self, outputs: Mapping[str, Any], batch: Mapping[str, jax.Array],
                    context: Any) -> dict[str, Any]:
    """With `players_first`: the players' loss inputs from the network's outputs (the step stops
    their gradient); `network_terms` then returns no player inputs."""
    raise NotImplementedError(f'{type(self).__name__} declares players_first without '
                              'player_inputs')

  def network_terms(self, outputs: Mapping[str, Mapping[str, jax.Array]],
                    batch: Mapping[str, jax.Array], players: Mapping[str, Callable],
                    frozen_outputs: Any) -> tuple[dict[str, jax.Array], dict[str, Any]]:
    """Returns `(terms, player_inputs)`; `players[name](x)` applies a player's current weights."""
    raise NotImplementedError

  def player_loss(self, name: str, apply: Callable[[jax.Array], jax.Array],
                  inputs: Any) -> jax.Array:
    """The loss of player `name`, `apply` bound to the weights being differentiated."""
    raise NotImplementedError(f'{type(self).__name__} has no player {name!r}')

  def check_init(self, trained_by: Mapping[str, Any] | None) -> str | None:
    """A reason the network's starting point does not suit this method, or None.

    `trained_by` is the record of the stage that produced the initial weights (`method`,
    `options`, `stage`), None for converted or random weights.
    """
    del trained_by
    return None
