"""Speed of the JAX training step and of evaluation, on random batches of the configured shapes.

  python -m dakd_jax.tools.benchmark --config configs/demo.py [--stage distill_c] [--iters 20] \
      [--config.stages.distill_c.batch_size=8]

Runs the step of one stage of the config (default `distill_c`, DAKD's distillation) exactly as
`train.py` jits it (state replicated and donated over a `('data',)` mesh of every device, batch
sharded), from random weights (frozen networks too), on random normalised images and labels: the
input pipeline is deliberately excluded, so the figures are the step's own and no dataset is
needed. Reported: compile time, median step time, images/s (source + target images the step
consumes), XLA's FLOP count of the compiled step, model FLOPs utilisation against the device's
peak for the compute dtype (null where the peak is unknown, e.g. CPU), peak device memory (null
where `memory_stats()` is unavailable, e.g. CPU), two memory figures that exist on every backend
(`compiled_temp_bytes`: XLA's scratch allocation of the compiled step per device;
`activation_bytes`: what autodiff keeps from the trained network's training forward for its
backward, which `config.remat` shrinks), and evaluation throughput (images/s at full label
resolution). The last output line is one JSON object. `--compile_only` skips the timed runs (e.g.
to size the paper's shapes on a small machine).
"""

import json
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from dakd_jax import evaluate
from dakd_jax import experiment
from dakd_jax import networks as networks_lib
from dakd_jax import sharding
from dakd_jax import stages as stages_lib
from dakd_jax import train as train_lib
from dakd_jax.data import transforms

# Dense peak FLOP/s per device by compute dtype (vendor data sheets; fp32 = non-tensor-core FP32 on
# GPUs, TPUs publish no fp32 matrix rate). Matched by substring of `device.device_kind`, in order.
PEAK_FLOPS = (
    ('H100 PCIe', {'bfloat16': 756e12, 'float16': 756e12, 'float32': 51.2e12}),
    ('H100', {'bfloat16': 989.4e12, 'float16': 989.4e12, 'float32': 66.9e12}),
    ('H200', {'bfloat16': 989.4e12, 'float16': 989.4e12, 'float32': 66.9e12}),
    ('A100', {'bfloat16': 312e12, 'float16': 312e12, 'float32': 19.5e12}),
    ('TPU v4', {'bfloat16': 275e12}),
    ('TPU v5 lite', {'bfloat16': 197e12}),
    ('TPU v5e', {'bfloat16': 197e12}),
)
# Label resolution of each dataset's validation images (the evaluation's output size).
NATIVE_LABEL_SIZE = {'cityscapes': (1024, 2048), 'bdd100k': (720, 1280), 'gta5': (1052, 1914)}

FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags, defined only when run as a script (the modules import each other)."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py).')
  flags.DEFINE_string('stage', 'distill_c', 'The stage of the config whose step is measured.')
  flags.DEFINE_integer('warmup', 3, 'Untimed steps after compilation.')
  flags.DEFINE_integer('iters', 10, 'Timed steps (the median is reported).')
  flags.DEFINE_integer('eval_iters', 10, 'Timed evaluation batches (0 = skip).')
  flags.DEFINE_bool('compile_only', False, 'Compile and report FLOPs and memory; time nothing.')
  flags.DEFINE_list(
      'eval_label_size', None, 'H,W of evaluation labels; default: eval.label_size, else '
      'synthetic.size when synthetic data is enabled, else the eval dataset\'s native size.')


def stage_spec(config, name: str) -> stages_lib.StageSpec:
  """The `StageSpec` of stage `name`, its inputs taken as from the stages before it.

  Nothing is read from disk: stage references resolve to the config's own networks.
  """
  if name not in config.stages:
    raise ValueError(f'--stage: expected one of {", ".join(config.stages)}, got {name!r}')
  order = [n for n in config.stages if n != name] + [name]
  return stages_lib.build(config, name, tempfile.gettempdir(), order)


def random_batch(stage: stages_lib.StageSpec, num_classes: int,
                 seed: int) -> Dict[str, np.ndarray]:
  """A step batch of the stage's shapes: Caffe-normalised uniform images, random labels.

  `source_image` `[B, H_s, W_s, 3]` and `target_image` `[B, H_t, W_t, 3]` float32 (uniform 0-255
  minus the BGR mean), `source_label` `[B, H_s, W_s]` int32 uniform over the classes with about
  10% ignored (255) pixels; the target batch only if the method uses it, with random
  `target_label` pseudo-labels alike if it has a `pseudo_labeler`. A stream with a random
  crop gives batches of the crop's size.
  """
  rng = np.random.default_rng(seed)
  b = stage.batch_size
  size = lambda stream: stream.augment.crop or stream.size
  images = lambda size: (rng.uniform(0, 255, (b, *size, 3)).astype(np.float32)
                         - transforms.CAFFE_MEAN_BGR)
  def labels(size):
    label = rng.integers(0, num_classes, (b, *size)).astype(np.int32)
    label[rng.random(label.shape) < 0.1] = 255
    return label
  batch = {'source_image': images(size(stage.source)), 'source_label': labels(size(stage.source))}
  if stage.method.uses_target:
    batch['target_image'] = images(size(stage.target))
  if stage.method.pseudo_labeler:
    batch['target_label'] = labels(size(stage.target))
  return batch


def images_per_step(stage: stages_lib.StageSpec) -> int:
  """Images one step consumes: the source batch, plus the target batch when it is used."""
  return stage.batch_size * (2 if stage.method.uses_target else 1)


def build_stage(stage, run, variables, devices: Optional[Sequence[jax.Device]] = None):
  """The stage's jitted, donating step and initial state exactly as `train.py` builds them."""
  return train_lib.build_stage(stage, run, variables, mesh=sharding.make_mesh(devices))


def median_time(fn: Callable[[], Any], warmup: int, iters: int) -> Tuple[float, List[float]]:
  """Runs `fn` (which must block until its work is done) `warmup + iters` times.

  Returns the median and the list of the timed wall-clock durations in seconds.
  """
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), times


def peak_flops(device: jax.Device, compute_dtype: str) -> Optional[float]:
  """Dense peak FLOP/s of one device for `compute_dtype`, or None if not tabulated."""
  for name, peaks in PEAK_FLOPS:
    if name in device.device_kind:
      return peaks.get(compute_dtype)
  return None


def compiled_flops(compiled) -> Optional[float]:
  """FLOPs of one execution of a compiled program on one device (XLA cost analysis)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per program.
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get('flops')
  return float(flops) if flops is not None and flops >= 0 else None


def peak_memory_bytes(devices: Sequence[jax.Device]) -> Optional[int]:
  """Largest `peak_bytes_in_use` over `devices`, or None where memory stats are unavailable."""
  peaks = [(d.memory_stats() or {}).get('peak_bytes_in_use') for d in devices]
  peaks = [p for p in peaks if p is not None]
  return max(peaks) if peaks else None


def compiled_temp_bytes(compiled) -> Optional[int]:
  """XLA's temporary (scratch) allocation of a compiled program on one device, if reported."""
  analysis = compiled.memory_analysis()
  return int(analysis.temp_size_in_bytes) if analysis is not None else None


def activation_bytes(network, variables: Dict[str, Any], images: jax.ShapeDtypeStruct) -> int:
  """Bytes autodiff saves from `network`'s training forward on `images` for the backward.

  The leaves of the VJP closure (`jax.vjp`, traced abstractly with `jax.eval_shape`): the
  activations the backward pass reads, plus the parameters and input it reuses. This is the
  program before XLA's optimisations, so it shows what `config.remat` asks for on every backend.
  """
  def forward(params, batch_stats, x):
    out, _ = network.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                           mutable=['batch_stats'], rngs={'dropout': jax.random.PRNGKey(0)})
    return out

  vjp = jax.eval_shape(lambda *args: jax.vjp(forward, *args)[1], variables['params'],
                       variables['batch_stats'], images)
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(vjp))


def benchmark_train_step(config, stage_name: str, warmup: int, iters: int, seed: int = 0,
                         compile_only: bool = False) -> Dict[str, Any]:
  """Compiles and times the stage's step; returns the figures of the final JSON line.

  With `compile_only` the step is not run: `step_time_s`, `images_per_s` and `mfu` are None.
  """
  stage = stage_spec(config, stage_name)
  run = experiment.run_settings(config, stage)
  variables = train_lib.random_variables(stage, run, frozen=True)
  built = build_stage(stage, run, variables)
  host_batch = random_batch(stage, config.num_classes, seed)
  batch = built.global_batch(host_batch)
  t0 = time.perf_counter()
  compiled = built.step_fn.lower(built.state, batch, built.frozen_variables).compile()
  compile_s = time.perf_counter() - t0
  state = built.state

  def run_step():
    nonlocal state
    state, metrics = compiled(state, batch, built.frozen_variables)
    jax.block_until_ready((state, metrics))

  step_time = None if compile_only else median_time(run_step, warmup, iters)[0]
  devices = list(built.mesh.devices.flat)
  per_device = compiled_flops(compiled)
  flops = per_device * len(devices) if per_device is not None else None
  peak = peak_flops(devices[0], config.compute_dtype)
  mfu = flops / (step_time * peak * len(devices)) if flops and peak and step_time else None
  source_images = jax.ShapeDtypeStruct(host_batch['source_image'].shape, np.float32)
  return {'stage': stage.name, 'method': stage.method.name, 'step_time_s': step_time,
          'images_per_s': images_per_step(stage) / step_time if step_time else None,
          'compile_s': compile_s, 'flops_per_step': flops, 'mfu': mfu,
          'peak_memory_bytes': peak_memory_bytes(devices),
          'device': f'{len(devices)} x {devices[0].device_kind} ({devices[0].platform})',
          'compiled_temp_bytes': compiled_temp_bytes(compiled),
          'activation_bytes': activation_bytes(built.program.network, variables['network'],
                                               source_images)}


def eval_label_size(config, override: Optional[Sequence[str]] = None) -> Tuple[int, int]:
  """Label (output) resolution of evaluation: explicit, configured, synthetic, or native."""
  if override:
    return tuple(int(v) for v in override)
  if config.eval.label_size:
    return tuple(config.eval.label_size)
  if config.synthetic.enabled:
    return tuple(config.synthetic.size)
  return NATIVE_LABEL_SIZE[config.eval.dataset]


def benchmark_eval(config, stage_name: str, label_size: Tuple[int, int], warmup: int, iters: int,
                   seed: int = 0) -> Dict[str, Any]:
  """Images/s of the evaluation step (main logits upsampled to `label_size`, confusion matrix)."""
  mesh = sharding.make_mesh()
  batch_sharding = sharding.batch_sharding(mesh)
  stage = stage_spec(config, stage_name)
  model = networks_lib.create_segmentation_model(stage.network, config.compute_dtype)
  variables = networks_lib.init_variables(model, jax.random.PRNGKey(seed),
                                          sharding=sharding.replicated(mesh))
  batch_size = evaluate.global_batch_size(config.eval.batch_size, mesh)
  rng = np.random.default_rng(seed)
  images = rng.uniform(0, 255, (batch_size, *config.eval.input_size, 3)).astype(np.float32)
  labels = rng.integers(0, config.num_classes, (batch_size, *label_size)).astype(np.int32)
  images, labels = (jax.device_put(x, batch_sharding)
                    for x in (images - transforms.CAFFE_MEAN_BGR, labels))
  # evaluate.py's own jitted step, so the figure is that of the real evaluation loop.
  step = evaluate.jit_eval_step(model, config.num_classes, mesh)
  run = lambda: jax.block_until_ready(step(variables, images, labels))
  step_time, _ = median_time(run, warmup + 1, iters)  # +1: the first call compiles.
  return {'eval_step_time_s': step_time, 'eval_images_per_s': batch_size / step_time,
          'eval_batch_size': batch_size, 'eval_input_size': list(config.eval.input_size),
          'eval_label_size': list(label_size)}


def _mib(num_bytes: Optional[int]) -> str:
  return 'n/a' if num_bytes is None else f'{num_bytes / 2**20:.1f} MiB'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  result = benchmark_train_step(config, FLAGS.stage, FLAGS.warmup, FLAGS.iters,
                                compile_only=FLAGS.compile_only)
  stage = config.stages[FLAGS.stage]
  size = lambda stream: tuple(stream.augment.crop or stream.size)  # The batch's (crop) size.
  timing = ('' if FLAGS.compile_only else f", median step {result['step_time_s'] * 1e3:.1f} ms, "
            f"{result['images_per_s']:.2f} images/s")
  print(f"train step of {result['stage']} ({result['method']}, batch {stage.batch_size} per "
        f'domain, source {size(stage.source)}, target {size(stage.target)}, compute '
        f"{config.compute_dtype}, remat {config.remat}) on {result['device']}: compile "
        f"{result['compile_s']:.1f} s{timing}; XLA scratch "
        f"{_mib(result['compiled_temp_bytes'])} per device, saved activations "
        f"{_mib(result['activation_bytes'])}")
  if FLAGS.eval_iters > 0 and not FLAGS.compile_only:
    ev = benchmark_eval(config, FLAGS.stage, eval_label_size(config, FLAGS.eval_label_size),
                        FLAGS.warmup, FLAGS.eval_iters)
    print(f"evaluation (batch {ev['eval_batch_size']}, input {tuple(ev['eval_input_size'])}, "
          f"labels {tuple(ev['eval_label_size'])}): median {ev['eval_step_time_s'] * 1e3:.1f} "
          f"ms, {ev['eval_images_per_s']:.2f} images/s")
    result.update(ev)
  print(json.dumps(result))


if __name__ == '__main__':
  _define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)
