"""JAX step vs the PyTorch reference step: numerical parity and speed, from the same weights.

  python -m dakd_jax.tools.compare --config configs/demo.py [--stage distill_c] \
      [--device cpu|gpu|tpu] \
      [--steps 3] [--warmup 3] [--iters 10] [--torch_forms cl,compile,cl+compile] \
      [--config.stages.distill_c.batch_size=8]

Both sides start from one set of weights: the PyTorch reference networks (`torch_ref.models`) are
initialised (seeded; the teacher's BatchNorm running statistics calibrated on random batches so
that its eval-mode forward is well scaled) and converted with the tested `convert.torch_to_flax`.
Both then run the step of one stage of the config (`--stage`, default DAKD's `distill_c`) on the
same random batches of the stage's shapes (Caffe-normalised uniform images, random labels with
about 10% ignored pixels; see `benchmark.random_batch`), so no dataset is needed.

Printed: (1) parity: every loss term's relative difference at each of `--steps` steps, and after
them the largest relative difference of every variable collection (parameters, BN statistics,
discriminators) and of the parameter *updates* (what the steps changed); (2) speed: the median
step time and images/s (source + target images) of the JAX step and of PyTorch fp32 eager (how
the official scripts run), and of each faster PyTorch form tried (channels_last, torch.compile,
autocast when the JAX compute dtype is bf16/fp16: forms of the JAX step's precision are "fair");
forms that fail are reported and skipped, and the fastest one is named with its ratio.

JAX runs on every device of `--device` (all cores of a TPU, every local GPU); PyTorch runs on the
GPU with `--device gpu`, else on the CPU (`--device tpu` compares a TPU with the host's CPU, as no
PyTorch/XLA is used). Parity is computed in exact float32 on both sides: TF32 and JAX's default
one-pass bfloat16 matmul precision on TPUs would otherwise differ by ~1e-3. `parity`, `speed` and
the `print_*` functions are the library form the comparison notebook
(`notebooks/compare_jax_pytorch.ipynb`) calls.
"""

import contextlib
import dataclasses
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np
import torch
from torch import nn

from dakd_jax import experiment
from dakd_jax import models as jax_models
from dakd_jax import stages as stages_lib
from dakd_jax.tools import benchmark
from dakd_jax.tools import convert
from dakd_jax.torch_ref import models
from dakd_jax.torch_ref.step import TorchForm, TorchTrainer

# Options of `config.<network>.options` that the PyTorch reference constructors take.
_TORCH_OPTIONS = ('width', 'aux_tap', 'aspp_branches')
# PyTorch's float32 precision settings of CUDA matmuls and cuDNN convolutions (`exact_float32`).
_TORCH_FP32_BACKENDS = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
_FORM_TOKENS = {'cl': 'channels_last', 'channels_last': 'channels_last', 'compile': 'compile',
                'bf16': 'bfloat16', 'fp16': 'float16', 'fp32': None}

FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags, defined only when run as a script (the modules import each other)."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py).')
  flags.DEFINE_string('stage', 'distill_c', 'The stage of the config whose step is compared.')
  flags.DEFINE_enum('device', 'cpu', ['cpu', 'gpu', 'tpu'],
                    'Where JAX runs (all its devices); PyTorch runs on the GPU with gpu, else on '
                    'the CPU.')
  flags.DEFINE_integer('steps', 3, 'Parity steps from identical weights (0 = skip).')
  flags.DEFINE_integer('warmup', 3, 'Untimed steps before timing each side.')
  flags.DEFINE_integer('iters', 10, 'Timed steps per side (0 = skip speed).')
  flags.DEFINE_list(
      'torch_forms', None, "Faster PyTorch forms to try, each '+'-joined tokens from cl, compile, "
      "bf16, fp16 (e.g. cl+bf16+compile). Default: cl, compile, cl+compile on GPU, compile on "
      'CPU, at the JAX compute dtype (autocast when it is bfloat16/float16).')
  flags.DEFINE_integer('seed', 0, 'Seeds the weights and the batches.')


def parse_form(spec: str) -> TorchForm:
  """'cl+bf16+compile' -> TorchForm(channels_last=True, amp='bfloat16', compile=True)."""
  kwargs = {}
  for token in spec.split('+'):
    if token not in _FORM_TOKENS:
      raise ValueError(f'--torch_forms: unknown token {token!r} in {spec!r}; expected tokens '
                       f'from {sorted(_FORM_TOKENS)} joined by +')
    value = _FORM_TOKENS[token]
    if value in ('channels_last', 'compile'):
      kwargs[value] = True
    else:
      kwargs['amp'] = value
  return TorchForm(**kwargs)


def torch_device_for(jax_platform: str) -> str:
  """Where the PyTorch side runs beside JAX on `jax_platform`: 'cuda' beside GPUs, else 'cpu'."""
  return 'cuda' if jax_platform == 'gpu' else 'cpu'


def default_forms(compute_dtype: str, platform: str) -> List[TorchForm]:
  """Candidate fast forms at the JAX step's precision (autocast when it is bf16/fp16), for
  PyTorch on `platform` ('cpu' or 'gpu').

  On CPU channels_last is left out: PyTorch's CPU convolution backward in that format measured
  4.7x slower than contiguous on the demo shapes (9.5 s vs 2.0 s per step).
  """
  amp = None if compute_dtype == 'float32' else compute_dtype
  if platform == 'cpu':
    return [TorchForm(compile=True, amp=amp)]
  return [TorchForm(channels_last=True, amp=amp), TorchForm(compile=True, amp=amp),
          TorchForm(channels_last=True, compile=True, amp=amp)]


@torch.no_grad()
def _calibrate_batchnorm(model: nn.Module, stage: stages_lib.StageSpec, num_classes: int,
                         seed: int, num_batches: int = 2) -> None:
  """Sets BN running statistics to the cumulative averages over random batches (eval-ready)."""
  bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
  for m in bns:
    m.reset_running_stats()
    m.momentum = None  # Cumulative moving average.
  model.train()
  for i in range(num_batches):
    batch = benchmark.random_batch(stage, num_classes, seed + 1000 + i)
    model(torch.from_numpy(batch['source_image']).permute(0, 3, 1, 2).contiguous())
  for m in bns:
    m.momentum = 0.1
  model.eval()


def _reference(spec: Dict[str, Any]) -> nn.Module:
  return models.create_reference(
      spec['arch'], spec['num_classes'],
      **{k: v for k, v in spec['options'].items() if k in _TORCH_OPTIONS})


def torch_networks(stage: stages_lib.StageSpec, seed: int = 0) -> Dict[str, Any]:
  """Seeded PyTorch reference networks of a stage: network, players, teacher (or None)."""
  torch.manual_seed(seed)
  num_classes = stage.network['num_classes']
  nets = {'network': _reference(stage.network),
          'players': {name: models.FCDiscriminator(p.input_channels, dict(p.options)['ndf'])
                      for name, p in stage.method.players(num_classes).items()},
          'teacher': None}
  if 'teacher' in stage.frozen_networks:
    nets['teacher'] = _reference(stage.frozen_networks['teacher'])
    _calibrate_batchnorm(nets['teacher'], stage, num_classes, seed)
  return nets


def flax_variables(nets: Dict[str, Any], stage: stages_lib.StageSpec) -> Dict[str, Any]:
  """The same weights as Flax variables (`train.random_variables` layout), via the converter."""
  seg = lambda module, spec: convert.torch_to_flax(
      module.state_dict(), spec['arch'], num_classes=spec['num_classes'], **spec['options'])
  players = stage.method.players(stage.network['num_classes'])
  return {'network': seg(nets['network'], stage.network),
          'players': {name: seg(module, players[name].spec)
                      for name, module in nets['players'].items()},
          'frozen': ({'teacher': seg(nets['teacher'], stage.frozen_networks['teacher'])}
                     if nets['teacher'] is not None else {})}


def make_trainer(stage: stages_lib.StageSpec, nets, form: TorchForm,
                 device: str) -> TorchTrainer:
  network = jax_models.create_model(stage.network['arch'], stage.network['num_classes'],
                                    **stage.network['options'])
  return TorchTrainer(nets['network'], nets['players'], stage.method, stage.optim,
                      stage.schedule_steps, freeze_bn_affine=network.freeze_bn_affine,
                      teacher=nets['teacher'], form=form, device=device)


def _relative(a, b) -> float:
  """||a - b|| / ||b|| (Euclidean norms; |a - b| / |b| for scalars; 0 when both are zero)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  diff, scale = np.linalg.norm((a - b).ravel()), np.linalg.norm(b.ravel())
  if scale == 0:
    return 0.0 if diff == 0 else float('inf')
  return float(diff / scale)


def _flat(tree) -> Dict[str, np.ndarray]:
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _matched(jax_tree, torch_tree) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
  j, t = _flat(jax_tree), _flat(torch_tree)
  if set(j) != set(t):
    raise ValueError(f'variable trees differ: {sorted(set(j) ^ set(t))[:5]}')
  return j, t


def _worst(jax_tree, torch_tree) -> Tuple[float, str]:
  """Largest per-tensor relative difference and the tensor's name."""
  j, t = _matched(jax_tree, torch_tree)
  return max((_relative(j[name], t[name]), name) for name in sorted(j))


def _update_difference(jax_tree, torch_tree, base_tree) -> float:
  """Relative difference of the whole change from `base_tree`, all tensors concatenated.

  Per-tensor update comparisons are meaningless where an update is below the float32 resolution
  of its parameter (e.g. a BN scale of 1 moved by 1e-7), so the collection's update is compared
  as one vector.
  """
  j, t = _matched(jax_tree, torch_tree)
  base = _flat(base_tree)
  delta = lambda tree: np.concatenate([(tree[n].astype(np.float64) - base[n]).ravel()
                                       for n in sorted(j)])
  return _relative(delta(j), delta(t))


@dataclasses.dataclass
class ParityReport:
  """Per-step loss comparisons and final variable differences.

  Attributes:
    losses: per step, `{metric name: (jax value, torch value, relative difference)}`.
    variables: `{collection: (max relative difference, worst tensor)}` after the steps, for
      'network/params', 'network/batch_stats', 'disc_aux/params', 'disc_main/params', and
      `{collection}/update`: the relative difference of the change the steps made to the whole
      collection (`(difference, 'all tensors')`).
  """
  losses: List[Dict[str, Tuple[float, float, float]]]
  variables: Dict[str, Tuple[float, str]]

  def max_loss_difference(self) -> float:
    return max(d for step in self.losses for _, _, d in step.values())


@contextlib.contextmanager
def exact_float32():
  """Full float32 convolutions and matmuls on both sides: JAX's 'highest' precision (TPUs
  otherwise multiply float32 in one bfloat16 pass, GPUs in TF32) and no TF32 in PyTorch's CUDA
  kernels (its cuDNN convolutions default to TF32). No change on CPUs."""
  saved = [backend.fp32_precision for backend in _TORCH_FP32_BACKENDS]
  for backend in _TORCH_FP32_BACKENDS:
    backend.fp32_precision = 'ieee'
  try:
    with jax.default_matmul_precision('highest'):
      yield
  finally:
    for backend, value in zip(_TORCH_FP32_BACKENDS, saved):
      backend.fp32_precision = value


def parity(config, stage_name: str, num_steps: int, seed: int = 0, device: str = 'cpu',
           jax_devices: Optional[Sequence[jax.Device]] = None) -> ParityReport:
  """Runs `num_steps` steps on both sides from identical weights and batches (fp32 eager torch,
  `exact_float32`; the config's compute dtype should be float32)."""
  with exact_float32():
    return _parity(config, stage_name, num_steps, seed, device, jax_devices)


def _parity(config, stage_name, num_steps, seed, device, jax_devices):
  stage = benchmark.stage_spec(config, stage_name)
  nets = torch_networks(stage, seed)
  initial = flax_variables(nets, stage)
  built = benchmark.build_stage(stage, experiment.run_settings(config, stage), initial,
                                jax_devices)
  trainer = make_trainer(stage, nets, TorchForm(), device)
  state, steps = built.state, []
  for i in range(num_steps):
    batch = benchmark.random_batch(stage, config.num_classes, seed + i)
    state, jax_metrics = built.step_fn(state, built.global_batch(batch), built.frozen_variables)
    torch_metrics = trainer.step(trainer.prepare_batch(batch))
    jax_losses = {k: float(v) for k, v in jax_metrics.items() if k.startswith('loss/')}
    if set(jax_losses) != set(torch_metrics):
      raise ValueError(f'loss terms differ: JAX only {sorted(set(jax_losses) - set(torch_metrics))}'
                       f', torch only {sorted(set(torch_metrics) - set(jax_losses))}')
    steps.append({k: (v, float(torch_metrics[k]), _relative(v, float(torch_metrics[k])))
                  for k, v in sorted(jax_losses.items())})
  final = flax_variables(nets, stage)
  state = jax.device_get(state)
  pairs = [('network', state.network, final['network'], initial['network'])]
  pairs += [(name, state.players[name], final['players'][name], initial['players'][name])
            for name in state.players]
  variables = {}
  for name, model_state, torch_tree, start in pairs:
    collections = ('params', 'batch_stats') if model_state.batch_stats else ('params',)
    for c in collections:
      jax_tree = getattr(model_state, c)
      variables[f'{name}/{c}'] = _worst(jax_tree, torch_tree[c])
      variables[f'{name}/{c}/update'] = (
          _update_difference(jax_tree, torch_tree[c], start[c]), 'all tensors')
  return ParityReport(losses=steps, variables=variables)


@dataclasses.dataclass
class Timing:
  """Median step time of one side, and its throughput; `error` is set when it could not run."""
  name: str
  step_time_s: Optional[float] = None
  images_per_s: Optional[float] = None
  error: Optional[str] = None


def time_jax(config, stage_name: str, nets, warmup: int, iters: int,
             jax_devices: Optional[Sequence[jax.Device]] = None, seed: int = 0) -> Timing:
  stage = benchmark.stage_spec(config, stage_name)
  built = benchmark.build_stage(stage, experiment.run_settings(config, stage),
                                flax_variables(nets, stage), jax_devices)
  batch = built.global_batch(benchmark.random_batch(stage, config.num_classes, seed))
  state = built.state

  def run():
    nonlocal state
    state, metrics = built.step_fn(state, batch, built.frozen_variables)
    jax.block_until_ready((state, metrics))

  median, _ = benchmark.median_time(run, warmup + 1, iters)  # +1: the first call compiles.
  return Timing(f'JAX ({config.compute_dtype})', median, benchmark.images_per_step(stage) / median)


def time_torch(config, stage_name: str, form: TorchForm, warmup: int, iters: int, device: str,
               seed: int = 0) -> Timing:
  """Times the PyTorch step in `form`; a form that fails to build or run is reported, not raised."""
  name = f'PyTorch ({form.describe()})'
  stage = benchmark.stage_spec(config, stage_name)
  try:
    trainer = make_trainer(stage, torch_networks(stage, seed), form, device)
    batch = trainer.prepare_batch(benchmark.random_batch(stage, config.num_classes, seed))
    sync = torch.cuda.synchronize if trainer.device.type == 'cuda' else (lambda: None)

    def run():
      trainer.step(batch)
      sync()

    median, _ = benchmark.median_time(run, warmup + 1, iters)
  except Exception as e:  # pylint: disable=broad-except  (fall back to the other forms)
    return Timing(name, error=f'{type(e).__name__}: {str(e).splitlines()[0][:200]}')
  return Timing(name, median, benchmark.images_per_step(stage) / median)


def print_parity(report: ParityReport) -> None:
  print('== parity (JAX vs PyTorch fp32 eager, identical weights and batches) ==')
  for i, step in enumerate(report.losses):
    print(f'step {i}:')
    for name, (j, t, d) in step.items():
      print(f'  {name:24s} jax {j: .8e}  torch {t: .8e}  rel.diff {d:.2e}')
  print(f'after {len(report.losses)} steps, max relative difference per collection:')
  for name, (d, worst) in report.variables.items():
    print(f'  {name:30s} {d:.2e}  ({worst})')


def print_timing(t: Timing) -> None:
  if t.error:
    print(f'  {t.name:45s} failed: {t.error}', flush=True)
  else:
    print(f'  {t.name:45s} {t.step_time_s * 1e3:9.1f} ms  {t.images_per_s:8.2f} images/s',
          flush=True)


def print_ratios(jax_timing: Timing, torch_timings: List[Timing]) -> None:
  """Speed-ups of JAX vs fp32 eager (the first timing) and vs the fastest working form."""
  eager = torch_timings[0]
  if jax_timing.error or eager.error:
    return
  print(f'JAX speed-up vs PyTorch fp32 eager: {eager.step_time_s / jax_timing.step_time_s:.2f}x')
  fastest = min((t for t in torch_timings if not t.error), key=lambda t: t.step_time_s)
  print(f'fastest PyTorch form measured: {fastest.name}; JAX speed-up vs it: '
        f'{fastest.step_time_s / jax_timing.step_time_s:.2f}x')


def speed(config, stage_name: str, jax_devices: Optional[Sequence[jax.Device]],
          torch_device: str, warmup: int, iters: int,
          forms: Optional[Sequence[TorchForm]] = None,
          seed: int = 0) -> Tuple[Timing, List[Timing]]:
  """Times the JAX step, then PyTorch fp32 eager (the official scripts' form) and each of
  `forms` (None: `default_forms` of the JAX compute dtype on `torch_device`), printing every
  timing as it is measured and then the speed-up ratios.

  Returns:
    The JAX timing and the PyTorch timings (fp32 eager first).
  """
  if forms is None:
    forms = default_forms(config.compute_dtype, 'gpu' if torch_device == 'cuda' else 'cpu')
  print('== speed (median step time after warm-up; images = source + target) ==')
  stage = benchmark.stage_spec(config, stage_name)
  jax_timing = time_jax(config, stage_name, torch_networks(stage, seed), warmup, iters,
                        jax_devices, seed)
  print_timing(jax_timing)
  torch_timings = []
  for form in [TorchForm(), *forms]:
    torch_timings.append(time_torch(config, stage_name, form, warmup, iters, torch_device, seed))
    print_timing(torch_timings[-1])
  print_ratios(jax_timing, torch_timings)
  return jax_timing, torch_timings


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  sys.stdout.reconfigure(line_buffering=True)  # Progress is visible when piped to a file.
  config, stage_name = FLAGS.config, FLAGS.stage
  stage = benchmark.stage_spec(config, stage_name)
  platform = FLAGS.device
  jax_devices = jax.devices(platform)
  torch_device = torch_device_for(platform)
  print(f'compare {stage_name} ({stage.method.name}): batch {stage.batch_size} per domain, source '
        f'{tuple(stage.source.size)}, target {tuple(stage.target.size)}; JAX on '
        f'{len(jax_devices)} x {jax_devices[0].device_kind}, PyTorch {torch.__version__} on '
        f'{torch_device} ({torch.get_num_threads()} threads)')
  if FLAGS.steps > 0:
    print_parity(parity(config, stage_name, FLAGS.steps, FLAGS.seed, torch_device, jax_devices))
  if FLAGS.iters > 0:
    forms = ([parse_form(s) for s in FLAGS.torch_forms] if FLAGS.torch_forms is not None
             else None)
    speed(config, stage_name, jax_devices, torch_device, FLAGS.warmup, FLAGS.iters, forms,
          FLAGS.seed)


if __name__ == '__main__':
  _define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)
