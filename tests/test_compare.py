"""JAX step vs the PyTorch reference step from identical weights, and the benchmark's JSON line."""

import json
import os
import subprocess
import sys

import jax
import pytest

torch = pytest.importorskip('torch')

from dakd_jax import compare  # pylint: disable=g-import-not-at-top  (after the torch skip)
from dakd_jax import config as config_lib  # pylint: disable=g-import-not-at-top
from dakd_jax.torch_ref.step import TorchForm  # pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
TOL = 1e-4  # float32 parity of losses and parameters.
# Parameter *changes* after 3 steps: Adam divides small discriminator gradients by their own
# magnitude, which enlarges float32 summation-order noise; still far below any real mismatch.
UPDATE_TOL = 1e-3


def tiny_config(mode='distill', **overrides):
  config = config_lib.base_config()
  config.mode = mode
  config.student.options.width = 1 / 16
  config.teacher.options.width = 1 / 16
  config.discriminator.ndf = 4
  config.source.size = config.target.size = (32, 64)
  config.batch_size = 2
  config.optim.lr = 0.01  # Large enough for 3 steps to move every parameter visibly.
  config.optim.d_lr = 1e-3
  config.train.num_steps = 10  # The poly schedule decays over the 3 steps.
  for key, value in overrides.items():
    config[key] = value
  return config


def assert_parity(report):
  assert len(report.losses) == STEPS
  for step in report.losses:
    for name, (j, t, diff) in step.items():
      assert diff < TOL, f'{name}: jax {j} torch {t} (relative difference {diff:.2e})'
  assert set(report.variables) >= {'student/params', 'student/batch_stats', 'disc_aux/params',
                                   'disc_main/params'}
  for name, (diff, worst) in report.variables.items():
    tol = UPDATE_TOL if name.endswith('/update') else TOL
    assert diff < tol, f'{name}: {worst} differs by {diff:.2e}'


@pytest.mark.parametrize('mode,method,terms', [
    ('distill', 'adaptsegnet', {'loss/src/kl_main', 'loss/tgt/pseudo_ce', 'loss/tgt/adv_main',
                                'loss/disc_aux'}),
    ('adapt', 'adaptsegnet', {'loss/src/seg_aux', 'loss/tgt/adv_aux', 'loss/disc_main'}),
])
def test_step_parity_with_pytorch(mode, method, terms):
  config = tiny_config(mode)
  config.adapt.method = method
  report = compare.parity(config, mode, STEPS, jax_devices=jax.devices()[:1])
  assert terms <= set(report.losses[0])
  if mode == 'adapt':
    assert not any('kl' in name for name in report.losses[0])
  assert_parity(report)
  # The steps really trained: every player moved, so the parity is not between two frozen nets.
  assert report.losses[-1]['loss/src/seg_main'][0] < report.losses[0]['loss/src/seg_main'][0]


def test_reference_terms_follow_the_loss_weights():
  """Doubling a weight doubles the PyTorch term, so a weight mismatch would break parity."""
  config = tiny_config('adapt')
  nets = compare.torch_networks(config, 'adapt')
  trainer = compare.make_trainer(config, 'adapt', nets, TorchForm(), 'cpu')
  config.adapt.lambda_seg_aux = 0.2
  other = compare.make_trainer(config, 'adapt', compare.torch_networks(config, 'adapt'),
                               TorchForm(), 'cpu')
  batch = trainer.prepare_batch(compare.benchmark.random_batch(config, 0))
  a, b = trainer.step(batch), other.step(batch)
  assert float(b['loss/src/seg_aux']) == pytest.approx(2 * float(a['loss/src/seg_aux']),
                                                       rel=1e-6)


def test_parse_form():
  assert compare.parse_form('cl+bf16+compile') == TorchForm(True, 'bfloat16', True)
  with pytest.raises(ValueError, match='unknown token'):
    compare.parse_form('cl+tf32')


def test_benchmark_last_line_is_json():
  env = dict(os.environ)
  env['XLA_FLAGS'] = ''  # One CPU device: the batch of 2 need not divide over 8.
  env['JAX_PLATFORMS'] = 'cpu'
  cmd = [sys.executable, '-m', 'dakd_jax.benchmark', '--config', 'configs/demo.py',
         '--config.mode=adapt', '--config.student.options.width=0.0625',
         '--config.discriminator.ndf=4', '--config.batch_size=2',
         '--config.source.size=(32, 64)', '--config.target.size=(32, 64)',
         '--config.eval.input_size=(32, 64)', '--warmup=1', '--iters=2', '--eval_iters=2']
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  required = {'step_time_s', 'images_per_s', 'compile_s', 'flops_per_step', 'mfu',
              'peak_memory_bytes', 'device'}
  assert required <= set(result)
  assert result['step_time_s'] > 0 and result['compile_s'] > 0 and result['flops_per_step'] > 0
  assert result['images_per_s'] == pytest.approx(4 / result['step_time_s'])
  assert result['mfu'] is None and result['peak_memory_bytes'] is None  # Unknown on CPU.
  assert result['eval_label_size'] == [128, 256]  # The demo's synthetic (full) resolution.
  assert result['compiled_temp_bytes'] > 0 and result['activation_bytes'] > 0


def test_remat_shrinks_the_saved_activations():
  config = tiny_config('adapt')
  variables = compare.benchmark.random_variables(config, 'adapt')['student']
  images = jax.ShapeDtypeStruct((2, 64, 128, 3), 'float32')
  saved = {}
  for remat in (False, True):
    config.remat = remat
    saved[remat] = compare.benchmark.activation_bytes(config, 'student', variables, images)
  params = sum(x.nbytes for x in jax.tree.leaves(variables['params']))
  # Without remat every block's intermediates are kept; with it, essentially the block inputs.
  assert saved[True] - params < 0.4 * (saved[False] - params)
