"""Size, compute, memory and speed of each network of a config at inference, on this device.

  python -m dakd_jax.tools.profile_model --config configs/gta2cs.py [--size 1024,2048] \
      [--batch 2] [--warmup 1] [--iters 3] [--networks teacher,student]

For every network of `config.networks` (random weights of its spec: the figures do not depend on
the values), the inference forward `model.apply(variables, images, train=False)['main']` (the
main logits at output stride 8, before upsampling) is compiled with jit on one device, in the
config's compute dtype, at `--size` (default `config.eval.input_size`). Reported:
  params          parameters (BN scale and bias included, running statistics not)
  weight_bytes    bytes of all variables (params + BN statistics)
  gflops          FLOPs of one image, XLA's cost analysis of the compiled batch-1 forward
  activation_mib  XLA's temporary allocation of the compiled batch-1 forward (the activations
                  alive at its peak; weights, input and output are separate buffers)
  latency_ms      median wall time of a batch-1 forward (after `--warmup` runs; `--iters` timed)
  images_per_s    `--batch` / median wall time of a batch-`--batch` forward
It prints a Markdown table and, last, one JSON line with every figure.
"""

import argparse
import importlib.util
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np

from dakd_jax import errors
from dakd_jax import models
from dakd_jax import networks as networks_lib
from dakd_jax import stages as stages_lib
from dakd_jax.tools import benchmark
from dakd_jax.tools import cli


def profile_network(spec: dict, size: tuple[int, int], *, batch: int, warmup: int, iters: int,
                    compute_dtype: str = 'float32', seed: int = 0) -> dict[str, Any]:
  """The figures of one network (see the module docstring); `iters=0` times nothing."""
  model = networks_lib.create_segmentation_model(spec, compute_dtype)
  device = jax.devices()[0]
  variables = networks_lib.init_variables(model, jax.random.PRNGKey(seed))
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)['main'])
  rng = np.random.default_rng(seed)

  def compiled_and_input(n):
    images = jax.device_put(rng.normal(0.0, 50.0, (n, *size, 3)).astype(np.float32), device)
    return forward.lower(variables, images).compile(), images

  t0 = time.perf_counter()
  single, image = compiled_and_input(1)
  compile_s = time.perf_counter() - t0
  flops = benchmark.compiled_flops(single)
  result = {
      'arch': spec['arch'], 'options': spec['options'], 'size': list(size),
      'compute_dtype': compute_dtype, 'device': f'{device.device_kind} ({device.platform})',
      'params': models.count_params(variables),
      'weight_bytes': sum(x.nbytes for x in jax.tree.leaves(variables)),
      'gflops': flops / 1e9 if flops is not None else None,
      'activation_bytes': benchmark.compiled_temp_bytes(single), 'compile_s': compile_s,
      'latency_ms': None, 'batch': batch, 'images_per_s': None,
  }
  if iters > 0:
    run = lambda fn, x: lambda: jax.block_until_ready(fn(variables, x))
    result['latency_ms'] = 1e3 * benchmark.median_time(run(single, image), warmup, iters)[0]
    batched, images = compiled_and_input(batch)
    result['images_per_s'] = batch / benchmark.median_time(run(batched, images), warmup,
                                                            iters)[0]
  return result


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
  """The figures of several networks as a Markdown table, one row per network."""
  def num(value, fmt, scale=1.0):
    return 'n/a' if value is None else format(value / scale, fmt)
  lines = ['| network | params (M) | weights (MiB) | GFLOPs / image | activations (MiB) | '
           'latency, batch 1 (ms) | images/s |',
           '|---|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    width = r['options'].get('width', 1.0)
    name = r['name'] + f' ({r["arch"]}' + ('' if width == 1.0 else f' x{width:g}') + ')'
    lines.append(
        f'| {name} | {r["params"] / 1e6:.2f} | {r["weight_bytes"] / 2**20:.1f} | '
        f'{num(r["gflops"], ".1f")} | {num(r["activation_bytes"], ".1f", 2**20)} | '
        f'{num(r["latency_ms"], ".0f")} | {num(r["images_per_s"], ".3f")}'
        + ('' if r['images_per_s'] is None else f' (batch {r["batch"]})') + ' |')
  return '\n'.join(lines)


def _parser() -> argparse.ArgumentParser:
  parser = cli.Parser(prog='python -m dakd_jax.tools.profile_model',
                      description='Parameters, FLOPs, memory and speed of a config\'s networks.')
  parser.add_argument('--config', required=True, help='experiment config file (configs/*.py)')
  parser.add_argument('--networks', help='comma-separated names of config.networks (default all)')
  parser.add_argument('--size', type=cli.size, help='H,W (default: config.eval.input_size)')
  parser.add_argument('--batch', type=int, default=8, help='batch of the images/s figure')
  parser.add_argument('--warmup', type=int, default=1, help='untimed runs before timing')
  parser.add_argument('--iters', type=int, default=3, help='timed runs (0: no timing)')
  return parser


def _load_config(path: str):
  """`get_config()` of a config file (run from the repository root: configs import each other)."""
  if not os.path.isfile(path):
    raise errors.UserError(f'--config {path}: no such file; expected a config file such as '
                           'configs/gta2cs.py')
  spec = importlib.util.spec_from_file_location('profiled_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _main(args: argparse.Namespace) -> int:
  config = _load_config(args.config)
  names = args.networks.split(',') if args.networks else list(config.networks)
  unknown = [n for n in names if n not in config.networks]
  if unknown:
    raise errors.UserError(f'--networks {args.networks}: {unknown} not in config.networks '
                           f'({", ".join(config.networks)})')
  if args.batch < 1 or args.warmup < 0 or args.iters < 0:
    raise errors.UserError('--batch: expected a positive integer; --warmup, --iters: non-negative')
  size = args.size or tuple(config.eval.input_size)
  rows = []
  for name in names:
    row = profile_network(stages_lib.network_spec(config, name), size, batch=args.batch,
                          warmup=args.warmup, iters=args.iters,
                          compute_dtype=config.compute_dtype)
    rows.append({'name': name, **row})
    print(f'{name}: {json.dumps(row)}', file=sys.stderr, flush=True)
  print(f'{size[0]}x{size[1]} images, {config.compute_dtype}, on {rows[0]["device"]}:')
  print(markdown_table(rows))
  print(json.dumps(rows))
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The CLI; returns the exit status (2: bad usage, reported in one line on stderr)."""
  return cli.run(_main, _parser(), argv)


if __name__ == '__main__':
  sys.exit(main())
