"""JAX step vs the PyTorch reference step from identical weights (every test needs torch)."""

import jax
import pytest

from configs import tiny
from dakd_jax.tools import benchmark

pytestmark = pytest.mark.torch

STEPS = 3
TOL = 1e-4  # float32 parity of losses and parameters.
# Parameter *changes* after 3 steps: Adam divides small discriminator gradients by their own
# magnitude, which enlarges float32 summation-order noise; still far below any real mismatch.
UPDATE_TOL = 1e-3


def compare_module():
  from dakd_jax.tools import compare  # pylint: disable=g-import-not-at-top  (imports torch)
  return compare


def tiny_config(**overrides):
  """configs/tiny.py with batch 2 (one device), lr large enough for 3 steps to move every
  parameter visibly, and a poly schedule that decays over those steps."""
  config = tiny.get_config()
  for stage in config.stages.values():
    stage.batch_size, stage.num_steps = 2, 10
    stage.optim.d_lr = 1e-3
  config.update_from_flattened_dict(overrides)
  return config


def assert_parity(report):
  assert len(report.losses) == STEPS
  for step in report.losses:
    for name, (j, t, diff) in step.items():
      assert diff < TOL, f'{name}: jax {j} torch {t} (relative difference {diff:.2e})'
  assert set(report.variables) >= {'network/params', 'network/batch_stats', 'disc_aux/params',
                                   'disc_main/params'}
  for name, (diff, worst) in report.variables.items():
    tol = UPDATE_TOL if name.endswith('/update') else TOL
    assert diff < tol, f'{name}: {worst} differs by {diff:.2e}'


@pytest.mark.slow
@pytest.mark.parametrize('stage, method, terms', [
    ('distill_c', 'adaptsegnet', {'loss/src/kl_main', 'loss/tgt/pseudo_ce', 'loss/tgt/adv_main',
                                  'loss/disc_aux'}),
    ('student', 'advent', {'loss/src/seg_aux', 'loss/tgt/adv_aux', 'loss/disc_main'}),
])
def test_step_parity_with_pytorch(stage, method, terms):
  key = (f'stages.{stage}.options.adaptation.method' if stage.startswith('distill')
         else f'stages.{stage}.method')
  config = tiny_config(**{key: method})
  report = compare_module().parity(config, stage, STEPS, jax_devices=jax.devices()[:1])
  assert terms <= set(report.losses[0])
  if not stage.startswith('distill'):
    assert not any('kl' in name for name in report.losses[0])
  assert_parity(report)
  # The steps really trained: every player moved, so the parity is not between two frozen nets.
  assert report.losses[-1]['loss/src/seg_main'][0] < report.losses[0]['loss/src/seg_main'][0]


def test_reference_terms_follow_the_method_options():
  """Doubling a weight doubles the PyTorch term, so a weight mismatch would break parity."""
  compare = compare_module()
  from dakd_jax.torch_ref.step import TorchForm  # pylint: disable=g-import-not-at-top

  def seg_aux(weight):
    config = tiny_config(**{'stages.student.options.lambda_seg_aux': weight})
    stage = benchmark.stage_spec(config, 'student')
    trainer = compare.make_trainer(stage, compare.torch_networks(stage), TorchForm(), 'cpu')
    batch = trainer.prepare_batch(benchmark.random_batch(stage, config.num_classes, 0))
    return float(trainer.step(batch)['loss/src/seg_aux'])

  assert seg_aux(0.2) == pytest.approx(2 * seg_aux(0.1), rel=1e-6)


def test_parse_form():
  compare = compare_module()
  from dakd_jax.torch_ref.step import TorchForm  # pylint: disable=g-import-not-at-top
  assert compare.parse_form('cl+bf16+compile') == TorchForm(True, 'bfloat16', True)
  with pytest.raises(ValueError, match='unknown token'):
    compare.parse_form('cl+tf32')


def test_exact_float32_is_full_precision_inside_and_restores_the_settings(torch):
  compare = compare_module()
  backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
  before = [b.fp32_precision for b in backends]
  with compare.exact_float32():
    assert [b.fp32_precision for b in backends] == ['ieee', 'ieee']
    assert jax.config.jax_default_matmul_precision == 'highest'
  assert [b.fp32_precision for b in backends] == before
  assert jax.config.jax_default_matmul_precision is None


def test_pytorch_runs_on_cuda_beside_gpus_only():
  compare = compare_module()
  assert [compare.torch_device_for(p) for p in ('gpu', 'tpu', 'cpu')] == ['cuda', 'cpu', 'cpu']
