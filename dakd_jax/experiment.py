"""What one command runs: the config's pipeline of stages (`mode=train`), or one evaluation.

Every stage of `config.pipeline` runs in order in its own directory under the workdir: it trains
(or, with `trained`, takes a given network), is evaluated on the target validation set (a stage
training no segmentation network, DiGA's translator, is not: it has no row), resumes
where it stopped and is skipped once `stage.json` exists (`dakd_jax/stages.py`). Every stage is
checked before the first one starts. Results go to `<workdir>/results.md` (a table shaped like
the paper's Table 1), `results.json` and `grid.png`.

This is where the config stops: stages receive `StageSpec`s, the loop `RunSettings`, evaluation
an `EvalSet` (plain dataclasses).
"""

import dataclasses
import json
import os

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
from PIL import Image

from dakd_jax import config as config_lib
from dakd_jax import continual
from dakd_jax import errors
from dakd_jax import evaluate as evaluate_lib
from dakd_jax import metrics as metrics_lib
from dakd_jax import models
from dakd_jax import networks as networks_lib
from dakd_jax import selection
from dakd_jax import sharding
from dakd_jax import stages as stages_lib
from dakd_jax import train as train_lib
from dakd_jax import writers
from dakd_jax.data import labels as labels_lib
from dakd_jax.data import pipeline as data_pipeline
from dakd_jax.data import synthetic

RESULTS_TABLE, RESULTS_JSON, GRID_FILE = 'results.md', 'results.json', 'grid.png'
CONTINUAL_TABLE = 'continual.md'  # mIoU per evaluated domain and forgetting (eval.also).
ORACLE_ROW = '{row} [oracle: best of {num_evaluations} on target val, step {step}]'


def run_settings(config, stage=None):
  """The `RunSettings` of `config` (call after `prepare_inputs` set `data_dir`); with the
  `StageSpec` `stage`, those it trains with (its seed)."""
  seed = config.seed if stage is None else stage.seed
  return train_lib.RunSettings(
      seed=seed, data_dir=config.data_dir, compute_dtype=config.compute_dtype,
      frozen_dtype=config.frozen_dtype, remat=config.remat, bn_sync=config.bn_sync,
      log_every=config.train.log_every, checkpoint_every=config.train.checkpoint_every,
      max_to_keep=config.train.max_to_keep, prefetch_to_device=config.train.prefetch_to_device,
      eval_every=config.eval.every if config.eval.select == 'best_oracle' else 0)


def eval_set(config, dataset=None):
  """The evaluation set of `config.eval`, on `dataset` (default `eval.dataset`)."""
  e = config.eval
  dataset = dataset or e.dataset
  return data_pipeline.EvalSet(
      dataset=dataset, root=config.roots[dataset], split=e.split,
      input_size=tuple(e.input_size), label_size=tuple(e.label_size) if e.label_size else None,
      normalization=config.normalization, num_images=e.num_images,
      num_classes=config.num_classes)


def make_evaluator(config, dataset=None):
  return evaluate_lib.Evaluator(eval_set(config, dataset), batch_size=config.eval.batch_size,
                                num_classes=config.num_classes,
                                compute_dtype=config.compute_dtype, data_dir=config.data_dir,
                                scales=tuple(config.eval.scales))


def prepare_inputs(config, workdir):
  """Synthetic data (if enabled), validation, the stage plan, and every dataset prepared.

  Returns the `StageSpec`s of the pipeline (empty in eval mode).
  """
  if not config.data_dir:  # One prepared copy of each dataset for every stage of the run.
    config.data_dir = os.path.join(os.path.abspath(workdir), 'tfds')
  if config.synthetic.enabled:
    s = config.synthetic
    out = s.out or os.path.join(workdir, 'synthetic')
    roots = {name: os.path.join(out, name)
             for name in ('gta5', 'cityscapes') + (('bdd100k',) if s.bdd else ())}
    if jax.process_index() == 0:
      roots = synthetic.generate(out, seed=s.seed, size=tuple(s.size), num_source=s.num_source,
                                 num_target_train=s.num_target_train,
                                 num_target_val=s.num_target_val, bdd=s.bdd,
                                 num_bdd_train=s.num_bdd_train, num_bdd_val=s.num_bdd_val)
    for name, root in roots.items():  # Empty roots point at the generated folders.
      config.roots[name] = config.roots[name] or root
    multihost_utils.sync_global_devices('synthetic data')
  config_lib.validate(config)
  plan = stages_lib.plan(config, workdir) if config.mode == 'train' else []
  mesh = sharding.make_mesh()
  for stage in plan:
    sharding.check_batch_divisible(stage.batch_size, mesh, f'stages.{stage.name}.batch_size')
  streams = [stream for s in plan for stream in (s.source, s.target)
             if stream is s.source or s.method.uses_target] + [
                 eval_set(config, d) for d in (config.eval.dataset, *config.eval.also)]
  for dataset in {data.dataset for data in streams}:
    config_lib.check_root(dataset, config.roots[dataset])
  if jax.process_index() == 0:
    _check_streams(streams, config.data_dir)
  multihost_utils.sync_global_devices('datasets prepared')
  return plan


def _check_streams(streams, data_dir):
  """Prepares and checks every distinct stream (`data_pipeline.check`); all problems in one
  `UserError` line."""
  problems = []
  for data in dict.fromkeys(streams):  # Ordered, without repeats.
    try:
      data_pipeline.check(data, data_dir)
    except errors.UserError as e:
      problems.append(str(e))
  if problems:
    count = f'{len(problems)} problems: ' if len(problems) > 1 else ''
    raise errors.UserError(count + ' | '.join(dict.fromkeys(problems)))


# Run-level fields that change what every stage trains (paths, logging and evaluation do not).
RUN_FIELDS = ('seed', 'num_classes', 'normalization', 'compute_dtype', 'frozen_dtype', 'bn_sync',
              'remat')


def stage_fields(config, name):
  """`{dotted key: value}` of everything that decides what stage `name` trains."""
  stage = config.stages[name]
  return writers.flatten({'stage': stage.to_dict(),
                          'network': config.networks[stage.network].to_dict(),
                          **{k: config[k] for k in RUN_FIELDS}})


def is_scored(stage):
  """Whether the stage's network is a segmentation network, evaluated on the target labels."""
  return stage.network['arch'] in models.SEGMENTATION_NETWORKS


def run_stage(config, stage, evaluator, workdir, also=None):
  """Trains (unless `stage.trained`) and evaluates one stage; skipped when complete.

  `also`: `{dataset: evaluator}` of the further datasets it is evaluated on (`eval.also`). A
  stage whose network segments nothing is trained only: its record's `metrics` is None.
  """
  directory = stages_lib.stage_dir(workdir, stage.name)
  longer = stages_lib.check_config_record(directory, stage.name, stage_fields(config, stage.name),
                                          allow_longer=config.train.allow_longer,
                                          added=config_lib.ADDED_STAGE_SETTINGS)
  if stages_lib.is_complete(directory) and not longer:
    record = stages_lib.read_record(directory)
    logging.info('%s is complete (step %d): skipped', stage.name, record['step'])
    return record
  eval_options = dict(save_predictions=config.eval.save_predictions,
                      num_grid_images=config.eval.num_grid_images)
  if stage.trained:
    export, step = stage.trained, -1
  else:
    run = run_settings(config, stage)
    evaluate = ((lambda variables: evaluator(stage.network, variables))
                if run.eval_every and is_scored(stage) else None)
    export = train_lib.train(stage, run, directory, evaluate=evaluate, hparams={
        'stage': stage.name, **config.stages[stage.name].to_dict(),
        'run': dataclasses.asdict(run)})
    step = stage.num_steps
  if not is_scored(stage):
    record = {'stage': stage.name, 'row': stage.row, 'method': stage.method.name,
              'network': stage.network['arch'], 'export': export, 'step': step, 'metrics': None,
              'oracle': None, 'target': stage.target.dataset, 'init': stage.init,
              'miou_by_dataset': {}}
    stages_lib.mark_complete(directory, record)
    return record
  spec, variables = networks_lib.load_network(export)
  metrics = evaluator(spec, variables, os.path.join(directory, 'eval'), checkpoint_step=step,
                      **eval_options)
  miou = {config.eval.dataset: metrics['miou']}
  for dataset, evaluate_on in (also or {}).items():
    miou[dataset] = evaluate_on(spec, variables, os.path.join(directory, f'eval_{dataset}'),
                                checkpoint_step=step, **eval_options)['miou']
  record = {'stage': stage.name, 'row': stage.row, 'method': stage.method.name,
            'network': stage.network['arch'], 'export': export, 'step': step,
            'metrics': metrics, 'oracle': selection.read_oracle(directory),
            'target': stage.target.dataset, 'init': stage.init, 'miou_by_dataset': miou}
  stages_lib.mark_complete(directory, record)
  return record


def run_pipeline(config, plan, workdir):
  """Every stage of the plan in order, then the results table and grid."""
  evaluator = make_evaluator(config)
  also = {d: make_evaluator(config, d) for d in config.eval.also}
  records = [run_stage(config, stage, evaluator, workdir, also) for stage in plan]
  scored = [r for r in records if r['metrics'] is not None]
  write_results(workdir, scored, config.num_classes)
  if also and jax.process_index() == 0:
    table = continual.format_table(scored, (config.eval.dataset, *also))
    print(table, flush=True)
    with open(os.path.join(workdir, CONTINUAL_TABLE), 'w') as f:
      f.write(table + '\n')
  return {r['stage']: r['metrics'] for r in records}


def result_rows(records):
  """`(row label, metrics)` of every stage, plus each oracle-selected network's own row."""
  rows = []
  for r in records:
    rows.append((r['row'], r['metrics']))
    if r.get('oracle'):
      rows.append((ORACLE_ROW.format(row=r['row'], **r['oracle']), r['oracle']))
  return rows


def write_results(workdir, records, num_classes):
  """The Table-1-shaped text table of the `num_classes` label set (with its subset means),
  results.json and the picture grid (process 0)."""
  table = metrics_lib.format_results_table(result_rows(records),
                                           labels_lib.class_names(num_classes),
                                           tuple(labels_lib.subset_means(num_classes)))
  print(table, flush=True)
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, RESULTS_TABLE), 'w') as f:
    f.write(table + '\n')
  with open(os.path.join(workdir, RESULTS_JSON), 'w') as f:
    json.dump({r['stage']: {'row': r['row'], 'metrics': r['metrics'], 'oracle': r['oracle']}
               for r in records}, f, indent=2)
  grid = results_grid([stages_lib.stage_dir(workdir, r['stage']) for r in records],
                      [r['row'] for r in records], num_classes)
  if grid is not None:
    Image.fromarray(grid).save(os.path.join(workdir, GRID_FILE))


def results_grid(stage_dirs, row_names, num_classes):
  """Rows: input | ground truth | prediction of every stage, for the evaluated grid images; the
  header names each column (the stages by their table rows), the legend names the classes."""
  grid_dirs = [os.path.join(d, 'eval', evaluate_lib.GRID_SUBDIR) for d in stage_dirs]
  if not grid_dirs or not os.path.isdir(grid_dirs[0]):
    return None
  names = sorted(f[:-len('_input.png')] for f in os.listdir(grid_dirs[0])
                 if f.endswith('_input.png'))
  read = lambda d, n, kind: np.asarray(Image.open(os.path.join(d, f'{n}_{kind}.png')).convert('RGB'))
  rows = [[read(grid_dirs[0], n, 'input'), read(grid_dirs[0], n, 'label')]
          + [read(d, n, 'pred') for d in grid_dirs] for n in names]
  titles = evaluate_lib.GRID_TITLES[:2] + tuple(row_names)
  return (evaluate_lib.labelled_grid(rows, titles, num_classes, tile_width=192) if rows
          else None)


def run(config, workdir):
  """Runs `config.mode`; returns `{stage: metrics}` (train) or the metrics (eval)."""
  os.makedirs(workdir, exist_ok=True)
  plan = prepare_inputs(config, workdir)
  if config.mode == 'eval':
    spec, variables = networks_lib.load_network(config.eval.variables)
    return make_evaluator(config)(
        spec, variables, os.path.join(workdir, 'eval'),
        save_predictions=config.eval.save_predictions,
        num_grid_images=config.eval.num_grid_images)
  return run_pipeline(config, plan, workdir)
