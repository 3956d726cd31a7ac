"""End to end on the synthetic pair: exact resume, the whole pipeline, two processes, config errors."""

import importlib.util
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from dakd_jax import config as config_lib
from dakd_jax import experiment
from dakd_jax import networks as networks_lib
from dakd_jax import train as train_lib
from dakd_jax.data import labels as labels_lib
from dakd_jax.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, 'configs', 'tiny.py')
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
  out = tmp_path_factory.mktemp('synthetic')
  synthetic.generate(out, size=(64, 128), num_source=12, num_target_train=12, num_target_val=6)
  return str(out)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def tiny_config(synthetic_root, data_dir, **overrides):
  """configs/tiny.py on the module's synthetic pair, with dotted-key overrides."""
  spec = importlib.util.spec_from_file_location('tiny', TINY_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.source.root = os.path.join(synthetic_root, 'gta5')
  config.target.root = os.path.join(synthetic_root, 'cityscapes')
  config.data_dir = data_dir
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split('.')
    for part in path:
      node = node[part]
    node[leaf] = value
  return config


def exported(workdir):
  return networks_lib.load_network(os.path.join(workdir, 'export'))[1]


def test_killed_and_resumed_run_equals_uninterrupted(synthetic_root, data_dir, tmp_path,
                                                      monkeypatch):
  config = tiny_config(synthetic_root, data_dir)
  experiment.run(config, str(tmp_path / 'straight'))

  real_annotation = jax.profiler.StepTraceAnnotation

  def killed_at_step_five(name, step_num):
    if step_num == 5:  # Five steps done, the last checkpoint after four: the fifth is lost.
      raise KeyboardInterrupt('simulated kill')
    return real_annotation(name, step_num=step_num)

  resumed = str(tmp_path / 'resumed')
  monkeypatch.setattr(jax.profiler, 'StepTraceAnnotation', killed_at_step_five)
  with pytest.raises(KeyboardInterrupt):
    experiment.run(tiny_config(synthetic_root, data_dir), resumed)
  assert not train_lib.is_complete(resumed)
  monkeypatch.setattr(jax.profiler, 'StepTraceAnnotation', real_annotation)
  experiment.run(tiny_config(synthetic_root, data_dir), resumed)

  a, b = exported(str(tmp_path / 'straight')), exported(resumed)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-6)
  # The resumed run logged steps 2 and 4 before the kill and again 6 after it.
  with open(os.path.join(resumed, 'metrics.jsonl')) as f:
    assert [json.loads(line)['step'] for line in f][-1] == 6


def test_pipeline_end_to_end(synthetic_root, data_dir, tmp_path):
  # The stages that chain: teacher and student adaptation, (c) from both, (d) from (c). The
  # others differ from these only in loss weights, which test_steps.py covers.
  stages = ('teacher', 'student', 'distill_c', 'distill_d')
  config = tiny_config(synthetic_root, data_dir, mode='pipeline', **{'pipeline.stages': stages})
  workdir = str(tmp_path / 'pipeline')
  results = experiment.run(config, workdir)
  assert list(results) == list(stages)
  for name in stages:
    with open(os.path.join(workdir, name, 'eval', 'metrics.json')) as f:
      metrics = json.load(f)
    assert set(metrics) == {'miou', 'pixel_acc', 'per_class_iou', 'num_images',
                            'checkpoint_step'}
    assert list(metrics['per_class_iou']) == list(labels_lib.CLASS_NAMES)
    assert 0 <= metrics['miou'] <= 100 and 0 <= metrics['pixel_acc'] <= 100
    assert metrics['num_images'] == 6 and metrics['checkpoint_step'] == 2
    assert train_lib.is_complete(os.path.join(workdir, name))
    preds = os.listdir(os.path.join(workdir, name, 'eval', 'pred'))
    assert len(preds) == 12 and all(p.endswith('_leftImg8bit.png') or
                                    p.endswith('_leftImg8bit_color.png') for p in preds)
  with open(os.path.join(workdir, experiment.RESULTS_TABLE)) as f:
    table = f.read()
  for name in stages:
    assert experiment.STAGES[name][4] in table
  assert os.path.exists(os.path.join(workdir, experiment.GRID_FILE))
  # Complete stages are skipped: a second run trains nothing and returns the same table.
  again = experiment.run(tiny_config(synthetic_root, data_dir, mode='pipeline',
                                     **{'pipeline.stages': stages}), workdir)
  assert again == results


def _run_main(args, env_devices, **kwargs):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={env_devices}')
  return subprocess.Popen([sys.executable, '-m', 'dakd_jax.main', *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_two_processes_equal_one(synthetic_root, data_dir, tmp_path):
  common = ['--config', TINY_CONFIG, '--config.train.num_steps=2',
            f'--config.source.root={synthetic_root}/gta5',
            f'--config.target.root={synthetic_root}/cityscapes', f'--config.data_dir={data_dir}']
  # Prepare the data once so the runs below only read it.
  experiment.prepare_inputs(tiny_config(synthetic_root, data_dir), str(tmp_path))
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
  a, b = exported(str(tmp_path / 'one')), exported(str(tmp_path / 'two'))
  # Cross-process (gloo) reductions sum in another order than one process's, and training
  # amplifies float32 rounding differences: compare each collection at its own scale. Data or
  # sharding mistakes (a duplicated or missing shard) give differences of order 1e-1.
  for collection in ('params', 'batch_stats'):
    x, y = jax.tree.leaves(a[collection]), jax.tree.leaves(b[collection])
    diff = max(float(np.abs(np.subtract(u, v, dtype=np.float64)).max()) for u, v in zip(x, y))
    assert diff / max(float(np.abs(u).max()) for u in x) < 1e-3, collection
  with open(tmp_path / 'one' / 'eval' / 'metrics.json') as f:
    one = json.load(f)
  with open(tmp_path / 'two' / 'eval' / 'metrics.json') as f:
    two = json.load(f)
  assert two['num_images'] == one['num_images'] == 6
  assert abs(two['miou'] - one['miou']) < 1e-3


@pytest.mark.parametrize('key,value,message', [
    ('distill.paradigm', 'e', r'config\.distill\.paradigm: expected one of'),
    ('mode', 'train', r'config\.mode: expected one of'),
    ('source.size', (64,), r'config\.source\.size: expected \(height, width\)'),
    ('source.root', '/nonexistent/gta5', r'config\.source\.root: expected an existing directory'),
    ('distill.kl_mode', 'kl', r'config\.distill\.kl_mode'),
    ('teacher.init', '/nonexistent', r'config\.teacher\.init: expected a variables directory'),
    ('distill.teacher_dtype', 'int8', r'config\.distill\.teacher_dtype: expected'),
    ('train.prefetch_to_device', -1, r'config\.train\.prefetch_to_device: expected'),
])
def test_invalid_config_fails_with_the_key(synthetic_root, data_dir, key, value, message):
  config = tiny_config(synthetic_root, data_dir, **{key: value})
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


def test_distill_mode_needs_a_teacher(synthetic_root, data_dir):
  config = tiny_config(synthetic_root, data_dir, mode='distill')
  with pytest.raises(ValueError, match=r'config\.distill\.teacher'):
    config_lib.validate(config)


def test_wrong_network_in_variables_directory(synthetic_root, data_dir, tmp_path):
  config = tiny_config(synthetic_root, data_dir)
  spec = networks_lib.model_spec(config, 'teacher')
  model = networks_lib.create_segmentation_model(spec)
  networks_lib.save_network(str(tmp_path / 'v'), spec,
                            networks_lib.init_variables(model, jax.random.PRNGKey(0)))
  with pytest.raises(ValueError, match='holds a drn_d_38 but drn_d_22 was expected'):
    networks_lib.load_network(str(tmp_path / 'v'), expected_arch='drn_d_22')


def test_distillation_starts_from_the_right_student(synthetic_root, data_dir):
  config = tiny_config(synthetic_root, data_dir)
  dirs = {name: f'/w/{name}' for name in experiment.STAGES}
  assert experiment._student_start(config, dirs, 'distill_a') == '/w/student/export'
  assert experiment._student_start(config, dirs, 'distill_d') == '/w/distill_c/export'
  config.distill.student_init = 'init'
  config.student.init = '/imagenet/drn_d_22'
  assert experiment._student_start(config, dirs, 'distill_b') == '/imagenet/drn_d_22'
