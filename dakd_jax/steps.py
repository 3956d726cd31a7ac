"""The one generic training step: the network's update and its players' updates, as pure functions.

Update order (AdaptSegNet / ADVENT / DAKD official code, method.md §1.2): the network's gradient is
taken through the *current* players (discriminators), each player's gradient on gradient-stopped
predictions of the *current* network; then every optimiser steps. Both gradients therefore come
from the pre-update weights. This is neither MAGVIT's single-VJP simultaneous game on shared
outputs nor an alternating G-then-D step on updated weights: it is the official order. A method
declaring `players_first` (DiGA's translator script, as CycleGAN/MUNIT) gets that alternating
order instead: the players step first on the current network's gradient-stopped outputs
(`Method.player_inputs`), then the network's gradient is taken through the updated players.

What is computed is the method's business (`dakd_jax.methods`): the step forwards the network on
the images the method's `prepare` names with the method's `forward` (by default the source batch
and, if the method uses it, the target batch; BatchNorm statistics updated in that order, as two
torch forwards would; the logits upsampled to the input size), and asks the method for the
weighted loss terms and the players' losses. Randomness comes from `fold_in(state.rng, state.step)` (exact on resume).

Shapes: images `[N, H, W, 3]` float32 (normalised), labels `[N, H, W]` int32 (255 = ignore).
"""

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from dakd_jax import losses
from dakd_jax.methods import base
from dakd_jax.state import TrainState


@dataclasses.dataclass(frozen=True)
class StepProgram:
  """The static half of a stage: method, modules and optimisers (not part of the state pytree).

  Attributes:
    method: the stage's method (its options are static).
    network: the trained segmentation module, `{'aux', 'main'}` logits at stride 8.
    network_tx: the network's optimiser.
    players: `{name: base.Player}`, the players the method declares (module and mode).
    player_txs: `{name: optimiser}`, same keys.
    frozen: `{name: module}` of the frozen networks the method needs (e.g. 'teacher').
    learning_rates: step -> `{name: lr}` for logging, or None.
  """
  method: base.Method
  network: Any
  network_tx: optax.GradientTransformation
  players: Mapping[str, base.Player]
  player_txs: Mapping[str, optax.GradientTransformation]
  frozen: Mapping[str, Any]
  learning_rates: Callable[[jax.Array], dict] | None = None

  def player_call(self, name: str, variables) -> base.PlayerCall:
    player = self.players[name]
    return base.PlayerCall(player.module, variables, player.train)


def network_loss(params, state: TrainState, program: StepProgram, batch, inputs, context, key):
  """The network's loss and its weighted terms.

  `inputs` are the `{name: images}` the network is forwarded on (`Method.prepare`), in order, by
  `Method.forward` with `key`; `context` is what `Method.network_terms` receives besides.

  Returns:
    `(total, (terms, new_batch_stats, (player_inputs, player_states)))`: `terms` maps
    `'src/…'` / `'tgt/…'` names to weighted scalars that sum to `total`; `player_inputs`
    (gradient stopped) feed the players' losses; `player_states` are the players' non-trainable
    collections after the network's pass (changed only by training-mode players).
  """
  outputs, batch_stats = program.method.forward(
      program.network, {'params': params, 'batch_stats': state.network.batch_stats}, inputs, key)
  total, (terms, player_aux) = terms_loss(outputs, program, batch, context, state.players)
  return total, (terms, batch_stats, player_aux)


def terms_loss(outputs, program: StepProgram, batch, context, players):
  """The method's weighted terms of the network's `outputs` with the `players`
  (`{name: ModelState}`): `(total, (terms, (player_inputs, player_states)))`, the last two
  gradient-stopped (see `network_loss`)."""
  calls = {name: program.player_call(name, players[name].variables) for name in program.players}
  terms, player_inputs = program.method.network_terms(outputs, batch, calls, context)
  player_states = {name: call.state for name, call in calls.items()}
  return sum(terms.values()), (terms, jax.lax.stop_gradient((player_inputs, player_states)))


def step_key(state: TrainState) -> jax.Array:
  """This step's PRNG key, so that a resumed run draws what an uninterrupted one would. Folded
  with 0: `Method.prepare`; with 1: the network's forwards (forward `i` folds `i` for dropout);
  with 2: `batch['rng']` for the method's terms (e.g. SKD's gradient-penalty mix)."""
  return jax.random.fold_in(state.rng, state.step)


def _apply_updates(model_state, grads, tx, batch_stats=None):
  updates, opt_state = tx.update(grads, model_state.opt_state, model_state.params)
  return model_state.replace(
      params=optax.apply_updates(model_state.params, updates), opt_state=opt_state,
      batch_stats=model_state.batch_stats if batch_stats is None else batch_stats)


def _player_updates(program: StepProgram, players, player_states, player_inputs):
  """Every player's gradient on `player_inputs` and its update: `(new players, {name: loss})`.

  `player_states` are collections to continue from (the network's pass over a training-mode
  player, torch: the same module's buffers); a player missing from it continues from its own.
  """
  updated, player_losses = {}, {}
  for name in program.players:
    current = players[name].with_state(player_states.get(name, {}))

    def player_loss(params, name=name, current=current):
      call = program.player_call(name, {**current.variables, 'params': params})
      return program.method.player_loss(name, call, player_inputs), call.state

    (loss, new_state), player_grads = jax.value_and_grad(player_loss, has_aux=True)(
        current.params)
    updated[name] = _apply_updates(current, player_grads, program.player_txs[name]).with_state(
        jax.lax.stop_gradient(new_state))
    player_losses[name] = loss
  return updated, player_losses


def train_step(state: TrainState, batch, frozen_variables, *, program: StepProgram):
  """One iteration: every gradient from the same weights, then every update.

  Args:
    state: replicated `TrainState` (donated by the jitted caller).
    batch: global arrays `{'source_image', 'source_label', 'target_image'}` (and the offline
      `'target_label'` of a method with a `pseudo_labeler`) sharded on the batch
      axis (the step adds a PRNG key of this step as `'rng'`); BatchNorm statistics are over the
      global batch unless the network was built with per-device statistics groups.
    frozen_variables: `{name: {'params', 'batch_stats'}}` of the frozen networks (may be empty).
    program: static configuration (bound with `functools.partial` before `jax.jit`).

  Returns:
    `(new_state, metrics)`; metrics are device scalars (fetched by the loop only at log steps).
  """
  method = program.method
  key = step_key(state)
  batch = {**batch, 'rng': jax.random.fold_in(key, 2)}
  frozen = {name: base.FrozenNetwork(module, frozen_variables[name])
            for name, module in program.frozen.items()}
  frozen_outputs = method.frozen_outputs(frozen, batch)
  inputs, context, method_state = method.prepare(
      state, batch, frozen_outputs, jax.random.fold_in(key, 0), program.network)

  network_key = jax.random.fold_in(key, 1)
  if method.players_first:
    # One forward: the players update on its gradient-stopped outputs, then the network's terms
    # (through the updated players) are pulled back through the same forward.
    forward = lambda params: method.forward(
        program.network, {'params': params, 'batch_stats': state.network.batch_stats}, inputs,
        network_key)
    outputs, pullback, batch_stats = jax.vjp(forward, state.network.params, has_aux=True)
    players, player_losses = _player_updates(
        program, state.players, {},
        jax.lax.stop_gradient(method.player_inputs(outputs, batch, context)))
    (total, (terms, (_, player_states))), output_grads = jax.value_and_grad(
        terms_loss, has_aux=True)(outputs, program, batch, context, players)
    grads, = pullback(output_grads)
    # Keep the collections the network's pass left.
    players = {name: p.with_state(player_states[name]) for name, p in players.items()}
  else:
    (total, (terms, batch_stats, (player_inputs, player_states))), grads = jax.value_and_grad(
        network_loss, has_aux=True)(state.network.params, state, program, batch, inputs,
                                    context, network_key)
    players, player_losses = _player_updates(program, state.players, player_states,
                                             player_inputs)
  metrics = {'loss/total': total, **{f'loss/{k}': v for k, v in terms.items()},
             'grad_norm/network': optax.tree.norm(grads),
             # Fraction of the global batch's source label pixels that are ignored.
             'data/source_ignored': jnp.mean(batch['source_label'] == losses.IGNORE_LABEL),
             **{f'loss/{name}': loss for name, loss in player_losses.items()}}
  new_state = state.replace(
      network=_apply_updates(state.network, grads, program.network_tx, batch_stats),
      players=players, step=state.step + 1, method_state=method_state)
  if program.learning_rates is not None:
    metrics.update({f'lr/{k}': v for k, v in program.learning_rates(state.step).items()})
  return new_state, metrics
