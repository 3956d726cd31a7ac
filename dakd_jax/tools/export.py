"""Serialises a network's inference function with `jax.export` (StableHLO) for serving.

  python -m dakd_jax.tools.export --model runs/gta2cs/distill_d/export --out student.jaxexport
  python -m dakd_jax.tools.export --model DIR --out deeplab_512x1024.jaxexport --size 512,1024

The exported function maps uint8 RGB images `[B, H, W, 3]` to float32 logits `[B, H, W, C]`:
normalisation (`--normalization`, default the official 'caffe'), the network in inference mode
with its variables baked in as constants, and the main logits upsampled align-corners bilinear to
the input size (`evaluate.main_logits`; their arg-max is what `python -m dakd_jax.predict
--input-size keep` writes). B, H and W are symbolic: one file serves any batch and image size.
DRN networks allow any H, W >= 1 (their output is ceil(H/8) x ceil(W/8)). DeepLab-v2's ceil-mode
max-pool pads by the parity of its input size, which shape polymorphism cannot express; for it
the tool says so and `--size H,W` exports one fixed image size (B stays symbolic).

Writes `--out` (the serialised `jax.export.Exported`, lowered for `--platforms`, default cpu and
cuda) and `--out`.json (the network's spec, the input and output contract, class names).
`dakd_jax/tools/exported.py` runs it with jax and numpy alone, without the model code.
"""

import argparse
import functools
import json
import os
import sys
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from dakd_jax import errors
from dakd_jax import evaluate
from dakd_jax import networks as networks_lib
from dakd_jax.data import labels as labels_lib
from dakd_jax.data import transforms
from dakd_jax.tools import cli

PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')  # What jax.export lowers for.

def _infer(model, variables, normalization, rgb):
  """uint8 RGB `[B, H, W, 3]` -> float32 main logits `[B, H, W, C]` at the input size."""
  images = transforms.normalize(rgb, normalization)
  return evaluate.main_logits(model, variables, images, rgb.shape[1:3])


def export_network(directory: str, *, normalization: str = 'caffe',
                   size: Optional[tuple[int, int]] = None,
                   platforms: Sequence[str] = ('cpu', 'cuda')) -> jax.export.Exported:
  """Exports the inference function of the network in `directory`.

  Args:
    directory: a variables directory.
    normalization: 'caffe' | 'imagenet', as the network was trained.
    size: (H, W) to export one fixed image size; None: symbolic H, W.
    platforms: what the module is lowered for (no device of that kind is needed).

  Raises:
    errors.UserError: the network's shapes do not allow symbolic H, W (use `size`).
  """
  spec, variables = networks_lib.load_network(directory)
  model = networks_lib.create_segmentation_model(spec)
  variables = jax.tree.map(jnp.asarray, variables)
  dims = 'b, h, w' if size is None else f'b, {size[0]}, {size[1]}'
  shape = jax.export.symbolic_shape(dims)
  fn = jax.jit(functools.partial(_infer, model, variables, normalization))
  try:
    return jax.export.export(fn, platforms=tuple(platforms))(
        jax.ShapeDtypeStruct((*shape, 3), jnp.uint8))
  except (jax.errors.InconclusiveDimensionOperation, TypeError) as e:
    if size is not None:
      raise
    reason = str(e).splitlines()[0]
    raise errors.UserError(f'--model {directory}: {spec["arch"]} cannot be exported with symbolic '
                           f'image sizes ({reason}); export fixed sizes with --size H,W') from None


def metadata(exported: jax.export.Exported, spec: dict, normalization: str) -> dict:
  """What `--out`.json records: the network, the input and output contract, the classes."""
  return {
      'network': spec,
      'input': {'shape': [str(d) for d in exported.in_avals[0].shape], 'dtype': 'uint8',
                'layout': 'NHWC RGB', 'normalization (inside)': normalization},
      'output': {'shape': [str(d) for d in exported.out_avals[0].shape], 'dtype': 'float32',
                 'meaning': 'main-head logits upsampled align-corners to the input size; '
                            'argmax over the last axis = train ids'},
      'class_names': list(labels_lib.CLASS_NAMES),
      'platforms': list(exported.platforms),
      'jax_version': jax.__version__,
      'calling_convention_version': exported.calling_convention_version,
  }


def _parser() -> argparse.ArgumentParser:
  parser = cli.Parser(prog='python -m dakd_jax.tools.export',
                      description="Export a network's inference function with jax.export.")
  parser.add_argument('--model', required=True, help='variables directory of the network')
  parser.add_argument('--out', required=True, help='output file (its metadata: <out>.json)')
  parser.add_argument('--normalization', choices=('caffe', 'imagenet'), default='caffe')
  parser.add_argument('--size', type=cli.size, help='H,W: one fixed image size (B symbolic)')
  parser.add_argument('--platforms', default='cpu,cuda', help='comma-separated, e.g. cpu,cuda,tpu')
  return parser


def _main(args: argparse.Namespace) -> int:
  spec = cli.model_spec(args.model)
  platforms = [p for p in args.platforms.split(',') if p]
  if not platforms or not set(platforms) <= set(PLATFORMS):
    raise errors.UserError(f'--platforms {args.platforms}: expected a comma-separated subset of '
                           f'{",".join(PLATFORMS)}')
  exported = export_network(args.model, normalization=args.normalization, size=args.size,
                            platforms=platforms)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'wb') as f:
    f.write(exported.serialize())
  with open(args.out + '.json', 'w') as f:
    json.dump(metadata(exported, spec, args.normalization), f, indent=2)
  print(f'wrote {spec["arch"]} ({", ".join(exported.platforms)}; input '
        f'{exported.in_avals[0].str_short()}) to {args.out} '
        f'({os.path.getsize(args.out) / 2**20:.1f} MiB) and {args.out}.json')
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The CLI; returns the exit status (2: bad usage, reported in one line on stderr)."""
  return cli.run(_main, _parser(), argv)


if __name__ == '__main__':
  sys.exit(main())
