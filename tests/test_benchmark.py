"""The benchmark tool: its JSON line, and what remat saves (no PyTorch needed)."""

import json
import os
import subprocess
import sys

from configs import tiny
import jax
import pytest

from dakd_jax import experiment
from dakd_jax import sharding
from dakd_jax import train as train_lib
from dakd_jax.tools import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_benchmark_last_line_is_json():
  env = dict(os.environ)
  env['XLA_FLAGS'] = ''  # One CPU device: the batch of 2 need not divide over 8.
  env['JAX_PLATFORMS'] = 'cpu'
  cmd = [sys.executable, '-m', 'dakd_jax.tools.benchmark', '--config', 'configs/demo.py',
         '--stage', 'student', '--config.networks.student.options.width=0.0625',
         '--config.stages.student.options.ndf=4', '--config.stages.student.batch_size=2',
         '--config.stages.student.source.size=(32, 64)',
         '--config.stages.student.target.size=(32, 64)',
         '--config.eval.input_size=(32, 64)', '--warmup=1', '--iters=2', '--eval_iters=2']
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  required = {'stage', 'method', 'step_time_s', 'images_per_s', 'compile_s', 'flops_per_step',
              'mfu', 'peak_memory_bytes', 'device'}
  assert required <= set(result)
  assert result['stage'] == 'student' and result['method'] == 'adaptsegnet'
  assert result['step_time_s'] > 0 and result['compile_s'] > 0 and result['flops_per_step'] > 0
  assert result['images_per_s'] == pytest.approx(4 / result['step_time_s'])
  assert result['mfu'] is None and result['peak_memory_bytes'] is None  # Unknown on CPU.
  assert result['eval_label_size'] == [128, 256]  # The demo's synthetic (full) resolution.
  assert result['compiled_temp_bytes'] > 0 and result['activation_bytes'] > 0


def test_remat_shrinks_the_saved_activations():
  saved = {}
  for remat in (False, True):
    config = tiny.get_config()
    config.remat = remat
    stage = benchmark.stage_spec(config, 'student')
    run = experiment.run_settings(config)
    variables = train_lib.random_variables(stage, run)['network']
    network = train_lib.network_module(stage, run, sharding.make_mesh(jax.devices()[:1]))
    images = jax.ShapeDtypeStruct((2, 64, 128, 3), 'float32')
    saved[remat] = benchmark.activation_bytes(network, variables, images)
  params = sum(x.nbytes for x in jax.tree.leaves(variables['params']))
  # Without remat every block's intermediates are kept; with it, essentially the block inputs.
  assert saved[True] - params < 0.4 * (saved[False] - params)
