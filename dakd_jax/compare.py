"""JAX step vs the PyTorch reference step: numerical parity and speed, from the same weights.

  python -m dakd_jax.compare --config configs/demo.py [--device cpu|gpu] [--steps 3] \
      [--warmup 3] [--iters 10] [--torch_forms cl,compile,cl+compile] [--config.batch_size=8]

Both sides start from one set of weights: the PyTorch reference networks (`torch_ref.models`) are
initialised (seeded; the teacher's BatchNorm running statistics calibrated on random batches so
that its eval-mode forward is well scaled) and converted with the tested `convert.torch_to_flax`.
Both then run the step of `config.mode` (`adapt`, or `distill` for `distill`/`pipeline`) on the
same random batches of the configured shapes (Caffe-normalised uniform images, random labels with
about 10% ignored pixels; see `benchmark.random_batch`), so no dataset is needed.

Printed: (1) parity: every loss term's relative difference at each of `--steps` steps, and after
them the largest relative difference of every variable collection (parameters, BN statistics,
discriminators) and of the parameter *updates* (what the steps changed); (2) speed: the median
step time and images/s (source + target images) of the JAX step and of PyTorch fp32 eager (how
the official scripts run), and of each faster PyTorch form tried (channels_last, torch.compile,
autocast when the JAX compute dtype is bf16/fp16: forms of the JAX step's precision are "fair");
forms that fail are reported and skipped, and the fastest one is named with its ratio.
"""

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

from dakd_jax import benchmark
from dakd_jax import convert
from dakd_jax import steps as steps_lib
from dakd_jax.torch_ref import models
from dakd_jax.torch_ref.step import TorchForm, TorchTrainer

# Options of `config.<network>.options` that the PyTorch reference constructors take.
_TORCH_OPTIONS = ('width', 'aux_tap', 'aspp_branches')
_FORM_TOKENS = {'cl': 'channels_last', 'channels_last': 'channels_last', 'compile': 'compile',
                'bf16': 'bfloat16', 'fp16': 'float16', 'fp32': None}

FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags, defined only when run as a script (the modules import each other)."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py).')
  flags.DEFINE_enum('device', 'cpu', ['cpu', 'gpu'], 'Where both sides run.')
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


def default_forms(compute_dtype: str, platform: str) -> List[TorchForm]:
  """Candidate fast forms at the JAX step's precision (autocast when it is bf16/fp16).

  On CPU channels_last is left out: PyTorch's CPU convolution backward in that format measured
  4.7x slower than contiguous on the demo shapes (9.5 s vs 2.0 s per step).
  """
  amp = None if compute_dtype == 'float32' else compute_dtype
  if platform == 'cpu':
    return [TorchForm(compile=True, amp=amp)]
  return [TorchForm(channels_last=True, amp=amp), TorchForm(compile=True, amp=amp),
          TorchForm(channels_last=True, compile=True, amp=amp)]


@torch.no_grad()
def _calibrate_batchnorm(model: nn.Module, config, seed: int, num_batches: int = 2) -> None:
  """Sets BN running statistics to the cumulative averages over random batches (eval-ready)."""
  bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
  for m in bns:
    m.reset_running_stats()
    m.momentum = None  # Cumulative moving average.
  model.train()
  for i in range(num_batches):
    batch = benchmark.random_batch(config, seed + 1000 + i)
    model(torch.from_numpy(batch['source_image']).permute(0, 3, 1, 2).contiguous())
  for m in bns:
    m.momentum = 0.1
  model.eval()


def torch_networks(config, mode: str, seed: int = 0) -> Dict[str, Optional[nn.Module]]:
  """Seeded PyTorch reference networks of a stage: student, disc_aux, disc_main, teacher."""
  torch.manual_seed(seed)
  build = lambda net: models.create_reference(
      config[net].arch, config.num_classes,
      **{k: v for k, v in config[net].options.items() if k in _TORCH_OPTIONS})
  nets = {'student': build(benchmark.trained_network(config, mode)),
          'disc_aux': models.FCDiscriminator(config.num_classes, config.discriminator.ndf),
          'disc_main': models.FCDiscriminator(config.num_classes, config.discriminator.ndf),
          'teacher': None}
  if mode == 'distill':
    nets['teacher'] = build('teacher')
    _calibrate_batchnorm(nets['teacher'], config, seed)
  return nets


def flax_variables(nets: Dict[str, Optional[nn.Module]], config, mode: str) -> Dict[str, Any]:
  """The same weights as Flax variables, through `convert.torch_to_flax`."""
  def seg(module, net):
    return convert.torch_to_flax(module.state_dict(), config[net].arch,
                                 num_classes=config.num_classes, **config[net].options)
  disc = lambda module: convert.torch_to_flax(
      module.state_dict(), 'fc_discriminator', num_classes=config.num_classes,
      ndf=config.discriminator.ndf)
  return {'student': seg(nets['student'], benchmark.trained_network(config, mode)),
          'disc_aux': disc(nets['disc_aux']), 'disc_main': disc(nets['disc_main']),
          'teacher': seg(nets['teacher'], 'teacher') if nets['teacher'] is not None else None}


def make_trainer(config, mode: str, nets, form: TorchForm, device: str) -> TorchTrainer:
  return TorchTrainer(nets['student'], nets['disc_aux'], nets['disc_main'],
                      steps_lib.loss_weights_from_config(config, mode), config.optim,
                      config.train.num_steps, teacher=nets['teacher'], form=form, device=device)


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
      'student/params', 'student/batch_stats', 'disc_aux/params', 'disc_main/params', and
      `{collection}/update`: the relative difference of the change the steps made to the whole
      collection (`(difference, 'all tensors')`).
  """
  losses: List[Dict[str, Tuple[float, float, float]]]
  variables: Dict[str, Tuple[float, str]]

  def max_loss_difference(self) -> float:
    return max(d for step in self.losses for _, _, d in step.values())


def parity(config, mode: str, num_steps: int, seed: int = 0, device: str = 'cpu',
           jax_devices: Optional[Sequence[jax.Device]] = None) -> ParityReport:
  """Runs `num_steps` steps on both sides from identical weights and batches (fp32 eager torch)."""
  nets = torch_networks(config, mode, seed)
  initial = flax_variables(nets, config, mode)
  stage = benchmark.build_stage(config, mode, initial, jax_devices)
  trainer = make_trainer(config, mode, nets, TorchForm(), device)
  state, steps = stage.state, []
  for i in range(num_steps):
    batch = benchmark.random_batch(config, seed + i)
    state, jax_metrics = stage.step_fn(state, stage.global_batch(batch), stage.teacher_variables)
    torch_metrics = trainer.step(trainer.prepare_batch(batch))
    jax_losses = {k: float(v) for k, v in jax_metrics.items() if k.startswith('loss/')}
    if set(jax_losses) != set(torch_metrics):
      raise ValueError(f'loss terms differ: JAX only {sorted(set(jax_losses) - set(torch_metrics))}'
                       f', torch only {sorted(set(torch_metrics) - set(jax_losses))}')
    steps.append({k: (v, float(torch_metrics[k]), _relative(v, float(torch_metrics[k])))
                  for k, v in sorted(jax_losses.items())})
  final = flax_variables(nets, config, mode)
  state = jax.device_get(state)
  variables = {}
  for name in ('student', 'disc_aux', 'disc_main'):
    model_state = getattr(state, name)
    collections = ('params', 'batch_stats') if name == 'student' else ('params',)
    for c in collections:
      jax_tree = getattr(model_state, c)
      variables[f'{name}/{c}'] = _worst(jax_tree, final[name][c])
      variables[f'{name}/{c}/update'] = (
          _update_difference(jax_tree, final[name][c], initial[name][c]), 'all tensors')
  return ParityReport(losses=steps, variables=variables)


@dataclasses.dataclass
class Timing:
  """Median step time of one side, and its throughput; `error` is set when it could not run."""
  name: str
  step_time_s: Optional[float] = None
  images_per_s: Optional[float] = None
  error: Optional[str] = None


def time_jax(config, mode: str, nets, warmup: int, iters: int,
             jax_devices: Optional[Sequence[jax.Device]] = None, seed: int = 0) -> Timing:
  stage = benchmark.build_stage(config, mode, flax_variables(nets, config, mode), jax_devices)
  batch = stage.global_batch(benchmark.random_batch(config, seed))
  state = stage.state

  def run():
    nonlocal state
    state, metrics = stage.step_fn(state, batch, stage.teacher_variables)
    jax.block_until_ready((state, metrics))

  median, _ = benchmark.median_time(run, warmup + 1, iters)  # +1: the first call compiles.
  return Timing(f'JAX ({config.compute_dtype})', median,
                benchmark.images_per_step(config, stage.weights) / median)


def time_torch(config, mode: str, form: TorchForm, warmup: int, iters: int, device: str,
               seed: int = 0) -> Timing:
  """Times the PyTorch step in `form`; a form that fails to build or run is reported, not raised."""
  name = f'PyTorch ({form.describe()})'
  try:
    trainer = make_trainer(config, mode, torch_networks(config, mode, seed), form, device)
    batch = trainer.prepare_batch(benchmark.random_batch(config, seed))
    sync = torch.cuda.synchronize if trainer.device.type == 'cuda' else (lambda: None)

    def run():
      trainer.step(batch)
      sync()

    median, _ = benchmark.median_time(run, warmup + 1, iters)
  except Exception as e:  # pylint: disable=broad-except  (fall back to the other forms)
    return Timing(name, error=f'{type(e).__name__}: {str(e).splitlines()[0][:200]}')
  weights = steps_lib.loss_weights_from_config(config, mode)
  return Timing(name, median, benchmark.images_per_step(config, weights) / median)


def _print_parity(report: ParityReport) -> None:
  print('== parity (JAX vs PyTorch fp32 eager, identical weights and batches) ==')
  for i, step in enumerate(report.losses):
    print(f'step {i}:')
    for name, (j, t, d) in step.items():
      print(f'  {name:24s} jax {j: .8e}  torch {t: .8e}  rel.diff {d:.2e}')
  print(f'after {len(report.losses)} steps, max relative difference per collection:')
  for name, (d, worst) in report.variables.items():
    print(f'  {name:30s} {d:.2e}  ({worst})')


def _print_timing(t: Timing) -> None:
  if t.error:
    print(f'  {t.name:45s} failed: {t.error}', flush=True)
  else:
    print(f'  {t.name:45s} {t.step_time_s * 1e3:9.1f} ms  {t.images_per_s:8.2f} images/s',
          flush=True)


def _print_ratios(jax_timing: Timing, torch_timings: List[Timing]) -> None:
  """Speed-ups of JAX vs fp32 eager (the first timing) and vs the fastest working form."""
  eager = torch_timings[0]
  if jax_timing.error or eager.error:
    return
  print(f'JAX speed-up vs PyTorch fp32 eager: {eager.step_time_s / jax_timing.step_time_s:.2f}x')
  fastest = min((t for t in torch_timings if not t.error), key=lambda t: t.step_time_s)
  print(f'fastest PyTorch form measured: {fastest.name}; JAX speed-up vs it: '
        f'{fastest.step_time_s / jax_timing.step_time_s:.2f}x')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  sys.stdout.reconfigure(line_buffering=True)  # Progress is visible when piped to a file.
  config = FLAGS.config
  mode = benchmark.stage_mode(config)
  platform = FLAGS.device
  jax_devices = jax.devices(platform)
  torch_device = 'cuda' if platform == 'gpu' else 'cpu'
  print(f'compare {mode}: batch {config.batch_size} per domain, source '
        f'{tuple(config.source.size)}, target {tuple(config.target.size)}; JAX on '
        f'{len(jax_devices)} x {jax_devices[0].device_kind}, PyTorch {torch.__version__} on '
        f'{torch_device} ({torch.get_num_threads()} threads)')
  if FLAGS.steps > 0:
    _print_parity(parity(config, mode, FLAGS.steps, FLAGS.seed, torch_device, jax_devices))
  if FLAGS.iters > 0:
    warmup, iters, seed = FLAGS.warmup, FLAGS.iters, FLAGS.seed
    forms = ([parse_form(s) for s in FLAGS.torch_forms] if FLAGS.torch_forms is not None
             else default_forms(config.compute_dtype, platform))
    print('== speed (median step time after warm-up; images = source + target) ==')
    jax_timing = time_jax(config, mode, torch_networks(config, mode, seed), warmup, iters,
                          jax_devices, seed)
    _print_timing(jax_timing)
    torch_timings = []
    for form in [TorchForm(), *forms]:  # fp32 eager first: the official scripts' form.
      torch_timings.append(time_torch(config, mode, form, warmup, iters, torch_device, seed))
      _print_timing(torch_timings[-1])
    _print_ratios(jax_timing, torch_timings)


if __name__ == '__main__':
  _define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)
