"""End to end on the synthetic pair: exact resume, the pipeline, two processes, oracle selection,
and the DeepLab teacher's optimiser groups read back from its own run."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dakd_jax import experiment
from dakd_jax import networks as networks_lib
from dakd_jax import selection
from dakd_jax import stages as stages_lib
from dakd_jax.data import labels as labels_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def exported(workdir, stage):
  return networks_lib.load_network(stages_lib.export_dir(workdir, stage))[1]


def test_killed_and_resumed_run_equals_uninterrupted(tiny_config, tmp_path, killed_run):
  six_steps = {'stages.student.num_steps': 6}
  experiment.run(tiny_config(**six_steps), str(tmp_path / 'straight'))
  resumed = str(tmp_path / 'resumed')
  # Killed at step 5 (the last checkpoint after four: the fifth step is lost).
  killed_run(tiny_config(**six_steps), resumed, 5)
  assert not stages_lib.is_complete(stages_lib.stage_dir(resumed, 'student'))
  experiment.run(tiny_config(**six_steps), resumed)

  a, b = exported(str(tmp_path / 'straight'), 'student'), exported(resumed, 'student')
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-6)
  # The resumed run logged steps 2 and 4 before the kill and again 6 after it.
  with open(os.path.join(resumed, 'student', 'metrics.jsonl')) as f:
    assert [json.loads(line)['step'] for line in f][-1] == 6


def test_pipeline_end_to_end_then_single_stages(tiny_config, tmp_path):
  # The stages that chain: teacher and student adaptation, (c) from both; then (d) alone from
  # (c) in the same workdir. The other stages differ from these only in their method's options,
  # which test_steps.py covers.
  names = ('teacher', 'student', 'distill_c')
  workdir = str(tmp_path / 'pipeline')
  results = experiment.run(tiny_config(pipeline=names), workdir)
  assert list(results) == list(names)
  results.update(experiment.run(tiny_config(pipeline=('distill_d',)), workdir))
  for name in names + ('distill_d',):
    directory = stages_lib.stage_dir(workdir, name)
    with open(os.path.join(directory, 'eval', 'metrics.json')) as f:
      metrics = json.load(f)
    assert set(metrics) == {'miou', 'pixel_acc', 'per_class_iou', 'num_images',
                            'checkpoint_step'}
    assert list(metrics['per_class_iou']) == list(labels_lib.CLASS_NAMES)
    assert 0 <= metrics['miou'] <= 100 and 0 <= metrics['pixel_acc'] <= 100
    assert metrics['num_images'] == 6 and metrics['checkpoint_step'] == 2
    assert stages_lib.is_complete(directory)
    preds = os.listdir(os.path.join(directory, 'eval', 'pred'))
    assert len(preds) == 12 and all(p.endswith('_leftImg8bit.png') or
                                    p.endswith('_leftImg8bit_color.png') for p in preds)
    # Every stage exports its players (the discriminators) beside its network.
    assert sorted(os.listdir(stages_lib.players_dir(workdir, name))) == ['disc_aux', 'disc_main']
  spec = networks_lib.read_model_spec(stages_lib.export_dir(workdir, 'distill_d'))
  assert spec['trained_by']['method'] == 'dakd'
  assert spec['trained_by']['options']['paradigm'] == 'd'
  with open(os.path.join(workdir, experiment.RESULTS_TABLE)) as f:
    assert tiny_config().stages.distill_d.row in f.read()  # The last run's table.
  assert os.path.exists(os.path.join(workdir, experiment.GRID_FILE))
  # Complete stages are skipped: a second run trains nothing and returns the same results.
  again = experiment.run(tiny_config(pipeline=names + ('distill_d',)), workdir)
  assert again == results
  # A given (trained) teacher is evaluated, never trained, and stage refs resolve to it.
  elsewhere = str(tmp_path / 'given')
  teacher = stages_lib.export_dir(workdir, 'teacher')
  given = experiment.run(tiny_config(pipeline=('teacher',), **{'stages.teacher.trained': teacher}),
                         elsewhere)
  assert given['teacher'] == {**results['teacher'], 'checkpoint_step': -1}
  assert not os.path.exists(os.path.join(stages_lib.stage_dir(elsewhere, 'teacher'),
                                         'checkpoints'))


def test_best_oracle_selection_is_reported_in_its_own_row(tiny_config, tmp_path):
  workdir = str(tmp_path / 'oracle')
  config = tiny_config(**{'eval.select': 'best_oracle', 'eval.every': 2,
                          'stages.student.num_steps': 6})
  experiment.run(config, workdir)
  directory = stages_lib.stage_dir(workdir, 'student')
  oracle = selection.read_oracle(directory)
  with open(os.path.join(directory, selection.HISTORY_FILE)) as f:
    history = [json.loads(line) for line in f]
  assert [h['step'] for h in history] == [2, 4, 6]
  best = max(history, key=lambda h: h['miou'])
  assert oracle['step'] == best['step'] and oracle['miou'] == best['miou']
  assert oracle['num_evaluations'] == 3
  with open(os.path.join(workdir, experiment.RESULTS_TABLE)) as f:
    table = f.read()
  assert f"[oracle: best of 3 on target val, step {oracle['step']}]" in table
  # The oracle's exported network scores what its evaluation recorded.
  spec, variables = networks_lib.load_network(os.path.join(directory, 'oracle', 'export'))
  rescored = experiment.make_evaluator(config)(spec, variables)
  assert rescored['miou'] == pytest.approx(oracle['miou'], abs=1e-9)


def test_deeplab_teacher_keeps_bn_affine_frozen_and_heads_at_ten_times_the_lr(
    synthetic_root, tfds_dir, tmp_path):
  """configs/gta2cs_deeplab.py's teacher stage, read back from its own logs and checkpoints.

  One device and the script's batch of 1 (compiling ResNet-101 for 8 simulated devices costs
  minutes); only the sizes, the widths and the step counts are shrunk.
  """
  workdir = tmp_path / 'deeplab'
  size = '(33, 65)'
  narrow = tmp_path / 'gta2cs_deeplab_narrow.py'  # The ResNet-101 at 1/8 of its channels.
  narrow.write_text('from configs import gta2cs_deeplab\n\n\ndef get_config():\n'
                    '  config = gta2cs_deeplab.get_config()\n'
                    '  config.networks.teacher.options.width = 0.125\n'
                    '  return config\n')
  run = _run_main(['--config', str(narrow),
                   '--workdir', str(workdir), f'--config.roots.gta5={synthetic_root}/gta5',
                   f'--config.roots.cityscapes={synthetic_root}/cityscapes',
                   f'--config.data_dir={tfds_dir}', '--config.pipeline=teacher',
                   '--config.stages.teacher.num_steps=3',
                   '--config.stages.teacher.schedule_steps=10',
                   f'--config.stages.teacher.source.size={size}',
                   f'--config.stages.teacher.target.size={size}',
                   f'--config.eval.input_size={size}', '--config.eval.num_images=2',
                   '--config.train.log_every=1', '--config.train.checkpoint_every=1',
                   '--config.stages.teacher.options.ndf=4'], env_devices=1)
  out = run.communicate(timeout=900)[0]
  assert run.returncode == 0, out[-3000:]
  directory = stages_lib.stage_dir(str(workdir), 'teacher')
  with open(os.path.join(directory, 'metrics.jsonl')) as f:
    logged = {r['step']: r for r in map(json.loads, f)}
  assert sorted(logged) == [1, 2, 3]
  for record in logged.values():
    assert record['lr/head_lr'] == pytest.approx(10 * record['lr/lr'], rel=1e-6)

  with ocp.CheckpointManager(os.path.join(directory, 'checkpoints')) as manager:
    restore = lambda step: manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))['state']
    before, after = restore(2), restore(3)
  flat = lambda tree: {jax.tree_util.keystr(p): v
                       for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
  old, new = flat(before['network']['params']), flat(after['network']['params'])
  # SGD's momentum trace (un-scaled, as torch's buffer) after update 3 is what update 3 applied
  # at its rate: change / trace = -lr of update index 2, logged at step 3.
  traces = {k: v for k, v in flat(after['network']['opt_state']).items() if 'trace' in k}
  ratios = {'head': [], 'body': []}
  for name, value in new.items():
    if name.endswith(("['scale']", "['bias']")) and '_head' not in name:
      # BatchNorm affine: bitwise its initial value (scale 1, bias 0) after three updates ...
      np.testing.assert_array_equal(value, float(name.endswith("['scale']")), err_msg=name)
      assert not any(k.endswith(name) for k in traces), name  # ... and no optimiser state.
      continue
    trace = np.asarray(next(v for k, v in traces.items() if k.endswith(name)), np.float64)
    delta = np.asarray(value, np.float64) - np.asarray(old[name], np.float64)
    big = np.abs(trace) > 1e-2 * np.abs(trace).max()
    ratios['head' if '_head' in name else 'body'].append(np.median(-delta[big] / trace[big]))
  lr = logged[3]['lr/lr']
  assert len(ratios['head']) == 16  # 2 heads x 4 ASPP branches x (kernel, bias)
  np.testing.assert_allclose(ratios['body'], lr, rtol=1e-3)
  np.testing.assert_allclose(ratios['head'], 10 * lr, rtol=1e-3)


def _run_main(args, env_devices, **kwargs):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={env_devices}')
  return subprocess.Popen([sys.executable, '-m', 'dakd_jax.main', *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_two_processes_equal_one(tiny_config, synthetic_root, tfds_dir, tmp_path):
  common = ['--config', os.path.join(REPO, 'configs', 'tiny.py'),
            f'--config.roots.gta5={synthetic_root}/gta5',
            f'--config.roots.cityscapes={synthetic_root}/cityscapes',
            f'--config.data_dir={tfds_dir}']
  # Prepare the data once so the runs below only read it.
  experiment.prepare_inputs(tiny_config(), str(tmp_path))
  single = _run_main(common + ['--workdir', str(tmp_path / 'one')], env_devices=2)
  out = single.communicate(timeout=600)[0]
  assert single.returncode == 0, out[-3000:]
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  procs = [_run_main(common + ['--workdir', str(tmp_path / 'two'),
                               f'--coordinator_address=localhost:{port}', '--num_processes=2',
                               f'--process_id={i}'], env_devices=1) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert 'process 1 of 2' in outs[1]
  a, b = exported(str(tmp_path / 'one'), 'student'), exported(str(tmp_path / 'two'), 'student')
  # Cross-process (gloo) reductions sum in another order than one process's, and training
  # amplifies float32 rounding differences: compare each collection at its own scale. Data or
  # sharding mistakes (a duplicated or missing shard) give differences of order 1e-1.
  for collection in ('params', 'batch_stats'):
    x, y = jax.tree.leaves(a[collection]), jax.tree.leaves(b[collection])
    diff = max(float(np.abs(np.subtract(u, v, dtype=np.float64)).max()) for u, v in zip(x, y))
    assert diff / max(float(np.abs(u).max()) for u in x) < 1e-3, collection
  metrics = {}
  for run in ('one', 'two'):
    with open(tmp_path / run / 'student' / 'eval' / 'metrics.json') as f:
      metrics[run] = json.load(f)
  assert metrics['two']['num_images'] == metrics['one']['num_images'] == 6
  assert abs(metrics['two']['miou'] - metrics['one']['miou']) < 1e-3
