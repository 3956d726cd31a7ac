"""What one command runs: a single stage (`adapt`, `distill`, `eval`) or the whole method (`pipeline`).

The pipeline trains, in order, a source-only baseline, the teacher and the student with
multi-level adversarial adaptation, then distils the teacher into the student with paradigms
(a)-(d) and evaluates every network on the target validation set. Each stage has its own directory
under the workdir, resumes where it stopped and is skipped once `stage.json` exists; results go to
`<workdir>/results.md` (a table shaped like the paper's Table 1), `results.json` and `grid.png`.
"""

import json
import os

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
from PIL import Image

from dakd_jax import config as config_lib
from dakd_jax import evaluate as evaluate_lib
from dakd_jax import metrics as metrics_lib
from dakd_jax import networks as networks_lib
from dakd_jax import train as train_lib
from dakd_jax.data import labels as labels_lib
from dakd_jax.data import pipeline as data_pipeline
from dakd_jax.data import synthetic

# name: (mode, network, adaptation method or paradigm, length field, table row)
STAGES = {
    'source_only': ('adapt', 'student', 'source_only', 'adapt_steps', 'Student, source only'),
    'teacher': ('adapt', 'teacher', None, 'adapt_steps', 'T: teacher (DA)'),
    'student': ('adapt', 'student', None, 'adapt_steps', 'S: student (DA)'),
    'distill_a': ('distill', 'student', 'a', 'distill_steps', '(a) source distill'),
    'distill_b': ('distill', 'student', 'b', 'distill_steps', '(b) target distill'),
    'distill_c': ('distill', 'student', 'c', 'distill_steps', '(c) source+target'),
    'distill_d': ('distill', 'student', 'd', 'distill_d_steps', '(d) target from (c)'),
}
RESULTS_TABLE, RESULTS_JSON, GRID_FILE = 'results.md', 'results.json', 'grid.png'


def prepare_inputs(config, workdir):
  """Generates the synthetic pair if configured and prepares every TFDS dataset (process 0)."""
  if config.synthetic.enabled:
    out = config.synthetic.out or os.path.join(workdir, 'synthetic')
    if jax.process_index() == 0:
      s = config.synthetic
      synthetic.generate(out, seed=s.seed, size=tuple(s.size), num_source=s.num_source,
                         num_target_train=s.num_target_train, num_target_val=s.num_target_val)
    for key in ('source', 'target', 'eval'):  # The generator writes one folder per dataset.
      if not config[key].root:
        config[key].root = os.path.join(out, config[key].dataset)
    multihost_utils.sync_global_devices('synthetic data')
  config_lib.validate(config)
  data_dir = train_lib.data_dir_of(config, workdir)
  if jax.process_index() == 0:
    needed = [config.eval] if config.mode == 'eval' else [config.source, config.target, config.eval]
    for domain in needed:
      data_pipeline.prepare(domain, data_dir)
  multihost_utils.sync_global_devices('datasets prepared')


def _stage_config(config, name):
  mode, _, variant, steps_field, _ = STAGES[name]
  cfg = config.copy_and_resolve_references()
  cfg.mode = mode
  cfg.train.num_steps = config.pipeline[steps_field]
  if mode == 'adapt':
    cfg.adapt.method = variant or config.adapt.method
  else:
    cfg.distill.paradigm = variant
  return cfg


def evaluate_directory(config, variables_dir, out_dir, workdir, checkpoint_step=-1):
  spec, variables = networks_lib.load_network(variables_dir)
  return evaluate_lib.evaluate(config, spec, variables, out_dir, checkpoint_step=checkpoint_step,
                               data_dir=train_lib.data_dir_of(config, workdir))


def run_stage(config, stage_dir, *, mode, network, init_dir='', teacher_dir='', trained_dir=''):
  """Trains (unless `trained_dir` is given) and evaluates one network; skipped when complete."""
  if train_lib.is_complete(stage_dir):
    info = train_lib.read_stage(stage_dir)
    logging.info('%s is complete (step %d): skipped', stage_dir, info['step'])
    return info
  if trained_dir:
    export, step = trained_dir, -1
  else:
    export = train_lib.train(config, stage_dir, mode=mode, network=network, init_dir=init_dir,
                             teacher_dir=teacher_dir)
    step = config.train.num_steps
  metrics = evaluate_directory(config, export, os.path.join(stage_dir, 'eval'), stage_dir, step)
  info = {'mode': mode, 'network': network, 'export': export, 'step': step, 'metrics': metrics}
  train_lib.mark_complete(stage_dir, info)
  return info


def _student_start(config, stage_dirs, name):
  """Where the pipeline's distillation stage `name` starts its student from."""
  if name == 'distill_d':
    return os.path.join(stage_dirs['distill_c'], 'export')
  return _student_init(config, os.path.join(stage_dirs['student'], 'export'))


def _student_init(config, adapted=''):
  """The variables directory a distilled student starts from (`distill.student_init`);
  `adapted` is the adapted student's export when `student.trained` does not name one."""
  choice = config.distill.student_init
  if choice == 'adapted':
    return config.student.trained or adapted
  return config.student.init if choice == 'init' else choice


def run_pipeline(config, workdir):
  """Every stage of `config.pipeline.stages` in order, then the results table and grid."""
  stage_dirs = {name: os.path.join(workdir, name) for name in STAGES}
  teacher_dir = (config.distill.teacher or config.teacher.trained
                 or os.path.join(stage_dirs['teacher'], 'export'))
  results = {}
  for name in config.pipeline.stages:
    mode, network, _, _, _ = STAGES[name]
    cfg = _stage_config(config, name)
    if mode == 'adapt':
      trained = config[network].trained if name != 'source_only' else ''
      info = run_stage(cfg, stage_dirs[name], mode=mode, network=network,
                       init_dir=config[network].init, trained_dir=trained)
    else:
      info = run_stage(cfg, stage_dirs[name], mode=mode, network=network,
                       init_dir=_student_start(config, stage_dirs, name), teacher_dir=teacher_dir)
    results[name] = info['metrics']
  write_results(workdir, results, stage_dirs)
  return results


def write_results(workdir, results, stage_dirs):
  """The Table-1-shaped text table, results.json and the picture grid (process 0)."""
  rows = [(STAGES[name][4], m) for name, m in results.items()]
  table = metrics_lib.format_results_table(rows, labels_lib.CLASS_NAMES)
  print(table, flush=True)
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, RESULTS_TABLE), 'w') as f:
    f.write(table + '\n')
  with open(os.path.join(workdir, RESULTS_JSON), 'w') as f:
    json.dump(results, f, indent=2)
  grid = results_grid(list(results), stage_dirs)
  if grid is not None:
    Image.fromarray(grid).save(os.path.join(workdir, GRID_FILE))


def results_grid(stage_names, stage_dirs):
  """Rows: input | ground truth | prediction of every stage, for the evaluated grid images."""
  grid_dirs = [os.path.join(stage_dirs[n], 'eval', evaluate_lib.GRID_SUBDIR) for n in stage_names]
  if not grid_dirs or not os.path.isdir(grid_dirs[0]):
    return None
  names = sorted(f[:-len('_input.png')] for f in os.listdir(grid_dirs[0])
                 if f.endswith('_input.png'))
  read = lambda d, n, kind: np.asarray(Image.open(os.path.join(d, f'{n}_{kind}.png')).convert('RGB'))
  rows = [[read(grid_dirs[0], n, 'input'), read(grid_dirs[0], n, 'label')]
          + [read(d, n, 'pred') for d in grid_dirs] for n in names]
  return evaluate_lib.picture_grid(rows, tile_width=192) if rows else None


def run(config, workdir):
  """Dispatches on `config.mode`; returns the metrics (dict, or dict of dicts for pipeline)."""
  os.makedirs(workdir, exist_ok=True)
  if not config.data_dir:  # One prepared copy of each dataset for every stage of the run.
    config.data_dir = os.path.join(os.path.abspath(workdir), 'tfds')
  prepare_inputs(config, workdir)
  network = config.network
  if config.mode == 'pipeline':
    return run_pipeline(config, workdir)
  if config.mode == 'eval':
    variables_dir = config[network].trained or os.path.join(workdir, 'export')
    return evaluate_directory(config, variables_dir, os.path.join(workdir, 'eval'), workdir)
  if config.mode == 'adapt':
    info = run_stage(config, workdir, mode='adapt', network=network, init_dir=config[network].init)
  else:
    info = run_stage(config, workdir, mode='distill', network='student',
                     init_dir=_student_init(config), teacher_dir=config.distill.teacher)
  return info['metrics']
