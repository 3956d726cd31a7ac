"""One training stage: data, state, the jitted step, the loop, resume and export.

`train(stage, run, stage_dir)` trains the network of a `stages.StageSpec` for `stage.num_steps`
steps, resuming from `<stage_dir>/checkpoints` when a checkpoint exists, and exports the network
(`<stage_dir>/export`) and the method's players (`<stage_dir>/players/<name>`). Layout of a stage
directory: `dakd_jax/stages.py`.
"""

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import tqdm

from dakd_jax import checkpointing
from dakd_jax import errors
from dakd_jax import models
from dakd_jax import networks as networks_lib
from dakd_jax import offline
from dakd_jax import optim
from dakd_jax import preemption
from dakd_jax import selection
from dakd_jax import sharding
from dakd_jax import stages as stages_lib
from dakd_jax import steps
from dakd_jax import writers
from dakd_jax.data import pipeline as data_pipeline
from dakd_jax.data import transforms
from dakd_jax.state import TrainState, create_train_state


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """Run-level choices shared by every stage (none of them changes a variable's shape).

  Attributes:
    seed: seeds initialisation, the state's RNG and the data order.
    data_dir: where the TFDS copies are prepared.
    compute_dtype: the networks' compute dtype ('float32' | 'bfloat16' | 'float16').
    frozen_dtype: the frozen networks' compute dtype ('' = compute_dtype).
    remat: recompute the trained network's blocks in the backward pass.
    bn_sync: 'global' (sync BN over the global batch) | 'per_device' (each device's shard).
    log_every, checkpoint_every, max_to_keep: the loop's logging and checkpointing.
    prefetch_to_device: batches moved to the devices ahead of the step (0 = in the loop).
    eval_every: steps between evaluations during training (0 = none; with an evaluator).
  """
  seed: int = 0
  data_dir: str = ''
  compute_dtype: str = 'float32'
  frozen_dtype: str = ''
  remat: bool = False
  bn_sync: str = 'global'
  log_every: int = 50
  checkpoint_every: int = 1_000
  max_to_keep: int = 3
  prefetch_to_device: int = 2
  eval_every: int = 0


@dataclasses.dataclass
class Stage:
  """A stage's jitted, state-donating step, its initial state and the frozen variables."""
  step_fn: Callable
  state: TrainState
  frozen_variables: dict[str, Any]
  program: steps.StepProgram
  mesh: jax.sharding.Mesh

  def global_batch(self, host_batch):
    return sharding.to_global_batch(host_batch, self.mesh)


def network_module(stage, run, mesh):
  """The trained network's module with the run's precision, remat and BN statistics groups."""
  groups = mesh.size if run.bn_sync == 'per_device' else 1
  return networks_lib.create_segmentation_model(stage.network, run.compute_dtype,
                                                remat=run.remat, bn_groups=groups)


def random_variables(stage, run, *, frozen=False, sharding=None):
  """Random initial `{'network', 'players': {name: ...}, 'frozen': {role: ...}}` variables.

  Keys: `split(PRNGKey(seed), 1 + players)` gives the network's and then each player's, in the
  method's order; frozen networks (only if asked, e.g. for benchmarks) use `fold_in(key, 1000 +
  i)`.
  """
  key = jax.random.PRNGKey(run.seed)
  players = stage.method.players(stage.network['num_classes'])
  keys = jax.random.split(key, 1 + len(players))
  init = functools.partial(networks_lib.init_variables, sharding=sharding)
  model = lambda spec: networks_lib.create_segmentation_model(spec, run.compute_dtype)
  return {
      'network': init(model(stage.network), keys[0]),
      'players': {name: init(p.module, k, channels=p.input_channels)
                  for (name, p), k in zip(players.items(), keys[1:])},
      'frozen': {role: init(model(spec), jax.random.fold_in(key, 1000 + i))
                 for i, (role, spec) in enumerate(sorted(stage.frozen_networks.items()))}
                if frozen else {}}


def build_stage(stage, run, variables, mesh=None):
  """Modules, optimisers, the replicated step-0 state and the jitted step of one stage.

  Args:
    stage: the `StageSpec`.
    run: the run's `RunSettings`.
    variables: `{'network', 'players', 'frozen'}` initial variables (see `random_variables`).
    mesh: the ('data',) mesh (default: every device of every process).
  """
  mesh = mesh or sharding.make_mesh()
  repl = sharding.replicated(mesh)
  horizon = stage.schedule_steps
  network = network_module(stage, run, mesh)
  network_tx = optim.make_segmentation_optimizer(
      stage.optim, horizon, models.parameter_groups(network, variables['network']['params']))
  players = stage.method.players(stage.network['num_classes'])
  player_txs = {name: optim.make_discriminator_optimizer(stage.optim, horizon) for name in players}
  program = steps.StepProgram(
      method=stage.method, network=network, network_tx=network_tx,
      players=players, player_txs=player_txs,
      frozen={role: networks_lib.create_segmentation_model(
          spec, run.frozen_dtype or run.compute_dtype)
              for role, spec in stage.frozen_networks.items()},
      learning_rates=functools.partial(optim.learning_rates, stage.optim, horizon,
                                       with_discriminators=bool(players)))
  state_rng = jax.random.fold_in(jax.random.PRNGKey(run.seed), 1)
  state = jax.jit(
      functools.partial(create_train_state, network_tx=network_tx, player_txs=player_txs,
                        init_method_state=functools.partial(stage.method.init_state,
                                                            network=network)),
      out_shardings=repl)(variables['network'], variables['players'], rng=state_rng)
  step_fn = jax.jit(functools.partial(steps.train_step, program=program),
                    in_shardings=(repl, sharding.batch_sharding(mesh), repl),
                    out_shardings=(repl, repl), donate_argnums=0)
  return Stage(step_fn=step_fn, state=state, frozen_variables=jax.device_put(
      variables['frozen'], repl), program=program, mesh=mesh)


def _load_inputs(stage, run, repl):
  """The stage's starting variables: init / players from their directories, frozen networks."""
  variables = random_variables(stage, run, sharding=repl)
  if stage.init:
    adapt = models.initialiser(stage.network['arch'])
    if adapt is None:
      _, loaded = networks_lib.load_network(stage.init, expected_arch=stage.network['arch'],
                                            reference=variables['network'])
    else:  # The model says how it starts from another network (MuHDi's step rules).
      spec, previous = networks_lib.load_network(stage.init)
      try:
        loaded = adapt(previous, jax.device_get(variables['network']))
      except ValueError as e:
        raise errors.UserError(f'{stage.init}: a {spec["arch"]} cannot initialise the stage\'s '
                               f'{stage.network["arch"]}: {e}') from None
    variables['network'] = jax.device_put(loaded, repl)
  logging.info('%s: network initialised from %s', stage.name, stage.init or 'random weights')
  if stage.players:
    for name, reference in variables['players'].items():
      _, loaded = networks_lib.load_network(os.path.join(stage.players, name),
                                            reference=reference)
      variables['players'][name] = jax.device_put(loaded, repl)
    logging.info('%s: players initialised from %s', stage.name, stage.players)
  for role, directory in stage.frozen.items():
    _, variables['frozen'][role] = networks_lib.load_network(directory)
    logging.info('%s: frozen %s %s from %s', stage.name, role,
                 stage.frozen_networks[role]['arch'], directory)
  return variables


def _device_stream(stream, keys, *, batch_size, seed, run, mesh, skipped):
  """An iterator of `{key: global jax.Array}` batches of one stream, prefetched to the mesh."""
  ds = data_pipeline.make_train_dataset(stream, global_batch_size=batch_size, seed=seed,
                                        data_dir=run.data_dir, skipped=skipped)
  put = lambda batch: sharding.to_global_batch({k: batch[k] for k in keys}, mesh)
  return iter(data_pipeline.prefetch_to_device(ds, put, run.prefetch_to_device))


def _check_finite(metrics, step, manager):
  bad = {k: float(v) for k, v in metrics.items() if not math.isfinite(float(v))}
  if bad:
    last = checkpointing.latest_step(manager)
    kept = (f'its last checkpoint, step {last}, whose losses were finite, is kept in '
            f'{manager.directory}' if last is not None else
            'no checkpoint had been written, so a rerun starts the stage afresh')
    raise FloatingPointError(f'non-finite values at step {step}: {bad}; the run stopped and '
                             f'{kept}')


SKIPPED_FILE = 'skipped_images.txt'


def _record_skipped(skipped, stage_dir, metrics):
  """Counts the examples the streams left out in `metrics` and lists them in the stage dir."""
  listing = skipped.listing()
  metrics['data/skipped_images'] = len(listing)
  if listing and jax.process_index() == 0:
    path = os.path.join(stage_dir, SKIPPED_FILE)
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
      f.writelines(f'{reason}\n' for reason in listing.values())
    os.replace(path + '.tmp', path)


IGNORED_WARNING = 0.5  # Warn when more of a batch's source label pixels than this are ignored.


def _check_labels(metrics, step, stage, warned):
  """Stops on a source batch whose labels all map to ignore; warns once above the threshold."""
  ignored = float(metrics['data/source_ignored'])
  where = f'{stage.source.dataset} {stage.source.split} labels ({stage.source.root})'
  if ignored >= 1.0:
    raise errors.UserError(
        f'{where}: every pixel of the batch at step {step} maps to ignore (255), so there is '
        'nothing to learn; the labels are not in the expected id space')
  if ignored > IGNORED_WARNING and not warned:
    logging.warning('%s: %.0f%% of the label pixels of the batch at step %d map to ignore (255)',
                    where, 100 * ignored, step)
    return True
  return warned


def _restart_rate(bar, done):
  """Shows `done` steps on `bar` with its clock and rate restarted (compilation left out)."""
  bar.unpause()  # Nothing was counted yet: the clock restarts now.
  bar.initial = bar.n = bar.last_print_n = done
  bar.refresh()


def _close_loop(bar, iterators, manager, writer, *, raising):
  """Ends the training loop; the checkpoint being written completes, so no finished work is lost.

  Also on an interrupt, a non-finite loss or a full disk (then `raising=False`): a failure while
  closing is logged instead of raised, so that it does not hide the error on its way.
  """
  bar.close()
  for it in iterators.values():
    it.close()
  failure = None
  for close in (functools.partial(checkpointing.wait_until_finished, manager), manager.close,
                writer.close):
    try:
      close()
    except Exception as e:  # pylint: disable=broad-except  (each closer runs)
      if raising and failure is None:
        failure = e
      else:
        logging.debug('while stopping: %s: %s', type(e).__name__, e)
  if failure is not None:
    raise failure


def train(stage, run, stage_dir, *, evaluate=None, hparams=None):
  """Trains one stage's network for `stage.num_steps` steps; resumes from `stage_dir` if possible.

  Args:
    stage: the `StageSpec`.
    run: the `RunSettings`.
    stage_dir: the stage directory.
    evaluate: `evaluate(variables) -> metrics`, called every `run.eval_every` steps (and at
      the end) to keep the best network (`selection.OracleSelection`); None = no evaluation.
    hparams: a dict written once to the stage's hparams (e.g. the stage's config).

  Returns:
    The exported variables directory of the trained network.
  """
  mesh = sharding.make_mesh()
  repl = sharding.replicated(mesh)
  built = build_stage(stage, run, _load_inputs(stage, run, repl), mesh=mesh)
  state, num_steps = built.state, stage.num_steps

  skipped = transforms.SkippedFiles()  # With config skip_unreadable_images.
  stream = functools.partial(_device_stream, batch_size=stage.batch_size, run=run, mesh=mesh,
                             skipped=skipped)
  iterators = {'source_iter': stream(stage.source, ('image', 'label'), seed=run.seed)}
  labeler = stage.method.pseudo_labeler
  if labeler:  # The target's labels are the labeler's, written before the first step.
    target = dataclasses.replace(stage.target, pseudo_labels=offline.write_pseudo_labels(
        stage, run, stage_dir, built.frozen_variables[labeler], mesh))
    iterators['target_iter'] = stream(target, ('image', 'label'), seed=run.seed + 1)
  elif stage.method.uses_target:
    # Target labels are never used: they do not exist in unsupervised adaptation.
    iterators['target_iter'] = stream(stage.target, ('image',), seed=run.seed + 1)

  manager = checkpointing.make_checkpoint_manager(
      os.path.join(stage_dir, 'checkpoints'), max_to_keep=run.max_to_keep,
      save_interval_steps=1)
  restored, start = checkpointing.restore_newest_readable(manager, state, iterators)
  if restored is not None:
    state = restored
    logging.info('resumed from step %d of %s', start, stage_dir)
  elif stage.method.state_passes:
    state = state.replace(method_state=jax.device_put(offline.initial_method_state(
        stage, run, state.method_state, built.program.network, state.network.variables),
        repl))
  oracle = (selection.OracleSelection(stage_dir, stage.network, start)
            if evaluate is not None else None)
  writer = writers.MetricWriter(stage_dir)
  if start == 0 and hparams is not None:
    writer.write_hparams(hparams)

  logging.info('%s: %s on %s, %d of %d poly steps, global batch %d per domain on %d devices; '
               'compiling...', stage.name, stage.method.name, stage.network['arch'], num_steps,
               stage.schedule_steps, stage.batch_size, mesh.size)
  bar = tqdm.tqdm(total=num_steps, initial=start, disable=jax.process_index() != 0,
                  desc=stage.name, dynamic_ncols=True)
  t0 = time.time()
  input_s, logged = 0.0, start  # Time the loop waited for batches since the last log.
  warned_ignored = False
  with preemption.StopOnSignal() as stop:
    try:
      for step in range(start, num_steps):
        t_input = time.perf_counter()
        source = next(iterators['source_iter'])
        batch = {'source_image': source['image'], 'source_label': source['label']}
        if 'target_iter' in iterators:
          target = next(iterators['target_iter'])
          batch['target_image'] = target['image']
          if labeler:
            batch['target_label'] = target['label']
        input_s += time.perf_counter() - t_input
        with jax.profiler.StepTraceAnnotation('train', step_num=step):
          state, metrics = built.step_fn(state, batch, built.frozen_variables)
        done = step + 1
        if done == start + 1:  # It compiled the step: the rate and the ETA count from its end.
          jax.block_until_ready(metrics)
          logging.info('%s: step %d compiled and ran in %.1f s', stage.name, done,
                       time.time() - t0)
          t0 = time.time()
          _restart_rate(bar, done)
        else:
          bar.update(1)
        last = done == num_steps
        if done % run.log_every == 0 or last or done % run.checkpoint_every == 0:
          host_metrics = jax.device_get(metrics)
          _check_finite(host_metrics, done, manager)
          warned_ignored = _check_labels(host_metrics, done, stage, warned_ignored)
          if stage.source.skip_unreadable:
            _record_skipped(skipped, stage_dir, host_metrics)
          if done > start + 1:
            host_metrics['perf/steps_per_s'] = (done - start - 1) / (time.time() - t0)
          host_metrics['perf/input_wait_s_per_step'] = input_s / (done - logged)
          input_s, logged = 0.0, done
          writer.write_scalars(done, host_metrics)
          bar.set_postfix(loss=f"{float(host_metrics['loss/total']):.4f}")
        saved = False
        if done % run.checkpoint_every == 0 or last:
          saved = checkpointing.save_checkpoint(manager, done, state, iterators, force=last)
        if oracle is not None and (last or done % run.eval_every == 0):
          oracle.record(done, evaluate(state.network.variables), state.network.variables)
        if not last and stop.requested(done):
          if not saved:
            _check_finite(jax.device_get(metrics), done, manager)
            checkpointing.save_checkpoint(manager, done, state, iterators, force=True)
          raise preemption.Preempted(stage.name, done, stop.reason)
    except BaseException:
      _close_loop(bar, iterators, manager, writer, raising=False)
      raise
  _close_loop(bar, iterators, manager, writer, raising=True)

  for name, player in stage.method.players(stage.network['num_classes']).items():
    networks_lib.save_network(os.path.join(stage_dir, stages_lib.PLAYERS_SUBDIR, name),
                              player.spec, state.players[name].variables)
  export_dir = os.path.join(stage_dir, stages_lib.EXPORT_SUBDIR)
  networks_lib.save_network(export_dir, {**stage.network, 'trained_by': stage.trained_by()},
                            state.network.variables)
  return export_dir
