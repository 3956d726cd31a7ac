"""One training stage (adaptation or distillation): data, state, jitted step, loop, resume, export.

Directory layout of a stage (`workdir`):
  checkpoints/   Orbax CheckpointManager: TrainState + both grain iterator states per saved step.
  export/        the final network as a variables directory (see `networks.py`).
  eval/          metrics.json, prediction PNGs and the picture grid (see `evaluate.py`).
  tensorboard/, metrics.jsonl   logged losses and learning rates.
  stage.json     written last: the stage is complete and is skipped when run again.
"""

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import tqdm

from dakd_jax import checkpointing
from dakd_jax import networks as networks_lib
from dakd_jax import optim
from dakd_jax import sharding
from dakd_jax import steps
from dakd_jax import writers
from dakd_jax.data import pipeline as data_pipeline
from dakd_jax.state import TrainState, create_train_state

STAGE_FILE = 'stage.json'


def data_dir_of(config, workdir):
  return config.data_dir or os.path.join(workdir, 'tfds')


def is_complete(workdir):
  return os.path.exists(os.path.join(workdir, STAGE_FILE))


def read_stage(workdir):
  with open(os.path.join(workdir, STAGE_FILE)) as f:
    return json.load(f)


def _device_stream(domain_cfg, keys, *, config, seed, data_dir, mesh):
  """An iterator of `{key: global jax.Array}` batches of one domain, prefetched to the mesh."""
  ds = data_pipeline.make_train_dataset(domain_cfg, global_batch_size=config.batch_size,
                                        seed=seed, data_dir=data_dir)
  put = lambda batch: sharding.to_global_batch({k: batch[k] for k in keys}, mesh)
  return iter(data_pipeline.prefetch_to_device(ds, put, config.train.prefetch_to_device))


def random_variables(config, network, seed, *, teacher=False, sharding=None):
  """Random initial `{'student', 'disc_aux', 'disc_main', 'teacher'}` variables of a stage.

  `student` is `config.<network>`; `teacher` (random `config.teacher`) only if asked, else None.
  """
  key = jax.random.PRNGKey(seed)
  student_key, d_aux_key, d_main_key = jax.random.split(key, 3)
  init = functools.partial(networks_lib.init_variables, sharding=sharding)
  segmentation = lambda net: networks_lib.create_segmentation_model(
      networks_lib.model_spec(config, net), config.compute_dtype)
  discriminator = networks_lib.create_discriminator(config)
  return {'student': init(segmentation(network), student_key),
          'disc_aux': init(discriminator, d_aux_key, channels=config.num_classes),
          'disc_main': init(discriminator, d_main_key, channels=config.num_classes),
          'teacher': init(segmentation('teacher'), jax.random.fold_in(key, 3)) if teacher else None}


def _check_finite(metrics, step, manager):
  bad = {k: float(v) for k, v in metrics.items() if not math.isfinite(float(v))}
  if bad:
    last = checkpointing.latest_step(manager)
    raise FloatingPointError(
        f'non-finite values at step {step}: {bad}; the run stopped and the last good checkpoint '
        f'(step {last}) is kept in {manager.directory}')


@dataclasses.dataclass
class Stage:
  """A stage's jitted, state-donating step, its initial state and the frozen teacher."""
  step_fn: Callable
  state: TrainState
  teacher_variables: Any
  weights: steps.LossWeights
  mesh: jax.sharding.Mesh

  def global_batch(self, host_batch):
    return sharding.to_global_batch(host_batch, self.mesh)


def build_stage(config, mode, variables, *, network='student', teacher_spec=None, mesh=None):
  """Networks, optimisers, the replicated step-0 state and the jitted step of one stage.

  Args:
    config: the run config (compute dtype, optimisers, loss weights, `train.num_steps`).
    mode: 'adapt' | 'distill'.
    variables: `{'student', 'disc_aux', 'disc_main', 'teacher'}` initial variables (teacher
      None in adapt mode).
    network: which `config.<network>` the student is ('teacher' when adapting the teacher).
    teacher_spec: the teacher's model spec (default: `config.teacher`).
    mesh: the ('data',) mesh (default: every device of every process).
  """
  mesh = mesh or sharding.make_mesh()
  repl = sharding.replicated(mesh)
  num_steps = config.train.num_steps
  student = networks_lib.create_segmentation_model(networks_lib.model_spec(config, network),
                                                   config.compute_dtype, remat=config.remat)
  teacher = None
  if mode == 'distill':
    teacher = networks_lib.create_segmentation_model(
        teacher_spec or networks_lib.model_spec(config, 'teacher'),
        config.distill.teacher_dtype or config.compute_dtype)
  student_tx = optim.make_segmentation_optimizer(config.optim, num_steps,
                                                 variables['student']['params'])
  disc_tx = optim.make_discriminator_optimizer(config.optim, num_steps)
  nets = steps.Networks(
      student=student, discriminator=networks_lib.create_discriminator(config),
      student_tx=student_tx, disc_tx=disc_tx, teacher=teacher,
      learning_rates=functools.partial(optim.learning_rates, config.optim, num_steps))
  weights = steps.loss_weights_from_config(config, mode)
  state_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  state = jax.jit(
      functools.partial(create_train_state, student_tx=student_tx, disc_tx=disc_tx),
      out_shardings=repl)(variables['student'], variables['disc_aux'], variables['disc_main'],
                          rng=state_rng)
  step_fn = jax.jit(
      functools.partial(steps.train_step, networks=nets, weights=weights),
      in_shardings=(repl, sharding.batch_sharding(mesh), repl), out_shardings=(repl, repl),
      donate_argnums=0)
  teacher_variables = None
  if variables.get('teacher') is not None:
    teacher_variables = jax.device_put(variables['teacher'], repl)
  return Stage(step_fn=step_fn, state=state, teacher_variables=teacher_variables,
               weights=weights, mesh=mesh)


def train(config, workdir, *, mode, network='student', init_dir='', teacher_dir=''):
  """Trains one network for `config.train.num_steps` steps; resumes from `workdir` if possible.

  Args:
    config: a validated config (`dakd_jax.config`).
    workdir: the stage directory.
    mode: 'adapt' (AdaptSegNet/ADVENT/source-only) or 'distill' (DAKD; needs `teacher_dir`).
    network: 'teacher' or 'student': which `config.<network>` architecture is trained.
    init_dir: variables directory to start from ('' = random).
    teacher_dir: variables directory of the frozen teacher (distill mode).

  Returns:
    The exported variables directory of the trained network.
  """
  mesh = sharding.make_mesh()
  repl = sharding.replicated(mesh)
  sharding.check_batch_divisible(config.batch_size, mesh)
  data_dir = data_dir_of(config, workdir)
  spec = networks_lib.model_spec(config, network)
  variables = random_variables(config, network, config.seed, sharding=repl)
  if init_dir:
    _, loaded = networks_lib.load_network(init_dir, expected_arch=spec['arch'],
                                          reference=variables['student'])
    variables['student'] = jax.device_put(loaded, repl)
  logging.info('%s: initialised from %s', network, init_dir or 'random weights')
  teacher_spec = None
  if mode == 'distill':
    teacher_spec, variables['teacher'] = networks_lib.load_network(teacher_dir)
    logging.info('teacher %s from %s', teacher_spec['arch'], teacher_dir)
  stage = build_stage(config, mode, variables, network=network, teacher_spec=teacher_spec,
                      mesh=mesh)
  state, num_steps = stage.state, config.train.num_steps

  stream = functools.partial(_device_stream, config=config, data_dir=data_dir, mesh=mesh)
  source_it = stream(config.source, ('image', 'label'), seed=config.seed)
  # Target labels are never used: they do not exist in unsupervised adaptation.
  target_it = stream(config.target, ('image',), seed=config.seed + 1)
  iterators = {'source_iter': source_it, 'target_iter': target_it}

  manager = checkpointing.make_checkpoint_manager(
      os.path.join(workdir, 'checkpoints'), max_to_keep=config.train.max_to_keep,
      save_interval_steps=1)
  start = checkpointing.latest_step(manager) or 0
  if start:
    state = checkpointing.restore_checkpoint(manager, state, iterators, step=start)
    logging.info('resumed from step %d of %s', start, workdir)
  writer = writers.MetricWriter(workdir)
  if start == 0:
    writer.write_hparams(config.to_dict())

  logging.info('%s %s (%s): %d steps, global batch %d per domain on %d devices; compiling...',
               mode, network, spec['arch'], num_steps, config.batch_size, mesh.size)
  bar = tqdm.tqdm(total=num_steps, initial=start, disable=jax.process_index() != 0,
                  desc=os.path.basename(os.path.normpath(workdir)), dynamic_ncols=True)
  t0 = time.time()
  input_s, logged = 0.0, start  # Time the loop waited for batches since the last log.
  try:
    for step in range(start, num_steps):
      t_input = time.perf_counter()
      source, target = next(source_it), next(target_it)
      input_s += time.perf_counter() - t_input
      batch = {'source_image': source['image'], 'source_label': source['label'],
               'target_image': target['image']}
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, metrics = stage.step_fn(state, batch, stage.teacher_variables)
      bar.update(1)
      done = step + 1
      last = done == num_steps
      if done % config.train.log_every == 0 or last or done % config.train.checkpoint_every == 0:
        host_metrics = jax.device_get(metrics)
        _check_finite(host_metrics, done, manager)
        host_metrics['perf/steps_per_s'] = (done - start) / (time.time() - t0)
        host_metrics['perf/input_wait_s_per_step'] = input_s / (done - logged)
        input_s, logged = 0.0, done
        writer.write_scalars(done, host_metrics)
        bar.set_postfix(loss=f"{float(host_metrics['loss/total']):.4f}")
      if done % config.train.checkpoint_every == 0 or last:
        checkpointing.save_checkpoint(manager, done, state, iterators, force=last)
  finally:
    # Also on an interrupt or a non-finite loss: the checkpoint being written completes, so no
    # finished work is lost, and the next run resumes from it.
    bar.close()
    for it in iterators.values():
      it.close()
    manager.wait_until_finished()
    manager.close()
    writer.close()

  export_dir = os.path.join(workdir, 'export')
  networks_lib.save_network(export_dir, spec, state.student.variables)
  return export_dir


def mark_complete(workdir, info):
  """Writes `stage.json` last, atomically: the stage will be skipped from now on."""
  if jax.process_index() != 0:
    return
  tmp = os.path.join(workdir, STAGE_FILE + '.tmp')
  with open(tmp, 'w') as f:
    json.dump(info, f, indent=2)
  os.replace(tmp, os.path.join(workdir, STAGE_FILE))
