"""Segments images, folders of images or videos with any trained or converted network.

  python -m dakd_jax.predict --model runs/gta2cs/distill_d/export \
      --input /data/cityscapes/leftImg8bit/val --out preds [--input-size 512,1024] [--batch-size 4]

`--model` is a variables directory (a finished stage's `export/`, or `dakd_jax.tools.convert`'s
output). Each image goes through the evaluation's preprocessing: decoded to RGB, resized (PIL
bicubic) to `--input-size` (default 512,1024, the evaluation input size of `configs/gta2cs.py`;
`keep` feeds every image at its own size), normalised (`--normalization`, default the official
'caffe'); the network's main logits are upsampled align-corners bilinear to the image's *own*
size and arg-maxed (`evaluate.predict_classes`). So a Cityscapes validation image gets exactly
the prediction the evaluation writes for it at full label resolution.

Outputs, one folder per kind under `--out`, each mirroring the input (see `image_inputs`):
  train_ids/<name>.png   uint8 train ids 0..18
  label_ids/<name>.png   Cityscapes label ids (7 = road, ...): cityscapesScripts' evaluation finds
                         them with CITYSCAPES_RESULTS=<out>/label_ids
  color/<name>.png       the Cityscapes palette
  overlay/<name>.png     the image blended 50/50 with the colour prediction
(`--outputs` picks a subset). Images of one size are batched together (`--batch-size`, rounded up
to the local device count, the last batch padded) so the jitted step compiles once per (input
size, output size). Unreadable inputs are reported in one line each, counted and skipped.
Exit status: 0; 1 if some inputs were skipped; 2 on bad usage (one line on stderr).
"""

import argparse
import collections
import concurrent.futures
import dataclasses
import functools
import os
import sys
from typing import Iterable, Iterator, Optional, Sequence

import jax
import numpy as np
from PIL import Image
import tqdm

from dakd_jax import errors
from dakd_jax import evaluate
from dakd_jax import networks as networks_lib
from dakd_jax import sharding
from dakd_jax.data import labels as labels_lib
from dakd_jax.data import transforms
from dakd_jax.tools import cli
from dakd_jax.tools import image_inputs

DEFAULT_INPUT_SIZE = (512, 1024)
# Output kind -> its image from (original RGB [H, W, 3], class ids [H, W], the network's classes).
OUTPUTS = {
    'train_ids': lambda rgb, pred, classes: pred,
    'label_ids': lambda rgb, pred, classes: labels_lib.to_label_ids(pred),
    'color': lambda rgb, pred, classes: labels_lib.colorize(pred, classes),
    'overlay': lambda rgb, pred, classes: labels_lib.overlay(rgb, pred, num_classes=classes),
}
CITYSCAPES_ONLY = ('label_ids',)  # Cityscapes label ids exist for the 19 train classes only.
_READ_AHEAD = 8  # Images decoded and preprocessed ahead of the device, per reader thread.


class Segmenter:
  """One network's jitted class maps over the local devices.

  Args:
    directory: a variables directory.
    input_size: (H, W) images are resized to, or None to keep each image's size.
    normalization: 'caffe' | 'imagenet', as the network was trained.
    batch_size: images per step (rounded up to a multiple of the local devices).
    compute_dtype: the network's compute dtype.
  """

  def __init__(self, directory: str, *, input_size: Optional[tuple[int, int]],
               normalization: str = 'caffe', batch_size: int = 4,
               compute_dtype: str = 'float32'):
    self.spec, variables = networks_lib.load_network(directory)
    model = networks_lib.create_segmentation_model(self.spec, compute_dtype)
    self.input_size, self.normalization = input_size, normalization
    mesh = sharding.make_mesh(jax.local_devices())
    self.batch_size = evaluate.global_batch_size(batch_size, mesh)
    repl, self._batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    self._variables = jax.device_put(variables, repl)
    # One compiled program per (input shape, output size): `size` is static.
    self.step = jax.jit(functools.partial(evaluate.predict_classes, model), static_argnums=2,
                        in_shardings=(repl, self._batch_sharding),
                        out_shardings=self._batch_sharding)

  def preprocess(self, image: Image.Image) -> np.ndarray:
    """PIL RGB image -> the network's float32 input [h, w, 3] (resized, normalised)."""
    if self.input_size is not None:
      image = transforms.resize_image(image, self.input_size)
    return transforms.normalize(np.asarray(image), self.normalization)

  def __call__(self, inputs: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Preprocessed inputs of one shape (at most `batch_size`) -> uint8 train ids [n, H, W] at
    `size`; the batch is padded with zero images to `batch_size`."""
    batch = np.zeros((self.batch_size, *inputs[0].shape), np.float32)
    batch[:len(inputs)] = np.stack(inputs)
    pred = self.step(self._variables, jax.device_put(batch, self._batch_sharding), tuple(size))
    return np.asarray(pred)[:len(inputs)]


@dataclasses.dataclass(frozen=True)
class _Loaded:
  item: image_inputs.Item
  rgb: np.ndarray  # uint8 [H, W, 3], the original image (for the overlay)
  network_input: np.ndarray  # float32 [h, w, 3]


def _load(segmenter: Segmenter, item: image_inputs.Item) -> _Loaded:
  image = item.read()
  return _Loaded(item, np.asarray(image), segmenter.preprocess(image))


def _read_ahead(load, items: Iterable[image_inputs.Item], pool, depth: int) -> Iterator:
  """Yields `(item, future of load(item))` in order, keeping `depth` loads in flight."""
  pending, iterator = collections.deque(), iter(items)
  while True:
    for item in iterator:
      pending.append((item, pool.submit(load, item)))
      if len(pending) >= depth:
        break
    if not pending:
      return
    yield pending.popleft()


def write_outputs(out_dir: str, name: str, rgb: np.ndarray, pred: np.ndarray,
                  kinds: Sequence[str], num_classes: int = labels_lib.NUM_CLASSES) -> None:
  """Writes `<out_dir>/<kind>/<name>.png` for each output kind; colours are those of the
  `num_classes` label set."""
  for kind in kinds:
    path = os.path.join(out_dir, kind, f'{name}.png')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(OUTPUTS[kind](rgb, pred, num_classes)).save(path)


def _wait(futures: collections.deque, keep: int) -> None:
  """Waits until at most `keep` futures are pending; re-raises their errors (a write error, e.g.
  a full disk, is not the input's fault and stops the run)."""
  while len(futures) > keep:
    futures.popleft().result()


def predict_all(segmenter: Segmenter, items: Iterable[image_inputs.Item], out_dir: str,
                kinds: Sequence[str], total: Optional[int] = None,
                threads: int = 2) -> tuple[int, list[str]]:
  """Predicts and writes every item; returns (images predicted, one-line failure messages).

  Images are grouped by (network input shape, original size) and sent when a group fills a
  batch; partial groups are sent at the end. Decoding and PNG writing run on `threads` threads
  each, beside the device; at most two batches of images wait to be written.
  """
  groups: dict[tuple, list[_Loaded]] = collections.defaultdict(list)
  failures, writes, predicted = [], collections.deque(), 0
  with concurrent.futures.ThreadPoolExecutor(threads) as readers, \
      concurrent.futures.ThreadPoolExecutor(threads) as writers, \
      tqdm.tqdm(total=total, unit='image', desc='predict', file=sys.stderr,
                disable=None) as bar:

    def send(key) -> int:
      group = groups.pop(key)
      for loaded, pred in zip(group, segmenter([g.network_input for g in group], key[1])):
        writes.append(writers.submit(write_outputs, out_dir, loaded.item.name, loaded.rgb, pred,
                                     kinds, segmenter.spec['num_classes']))
      bar.update(len(group))
      _wait(writes, 2 * segmenter.batch_size)
      return len(group)

    for item, future in _read_ahead(functools.partial(_load, segmenter), items, readers,
                                    _READ_AHEAD * threads):
      try:
        loaded = future.result()
      except (OSError, ValueError) as e:
        failures.append(f'skipped {item.source}: {e}')
        bar.write(failures[-1], file=sys.stderr)
        bar.update(1)
        continue
      key = (loaded.network_input.shape, loaded.rgb.shape[:2])
      groups[key].append(loaded)
      if len(groups[key]) == segmenter.batch_size:
        predicted += send(key)
    for key in list(groups):
      predicted += send(key)
    _wait(writes, 0)
  return predicted, failures


def _input_size(text: str) -> Optional[tuple[int, int]]:
  return None if text == 'keep' else cli.size(text)


def _parser() -> argparse.ArgumentParser:
  parser = cli.Parser(prog='python -m dakd_jax.predict',
                      description='Segment images, folders of images or videos with a network.')
  parser.add_argument('--model', required=True, help='variables directory of the network')
  parser.add_argument('--input', required=True, help='an image, a folder (recursive) or a video')
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument('--input-size', type=_input_size, default=DEFAULT_INPUT_SIZE,
                      help="H,W the images are resized to for the network, or 'keep' (default "
                           '512,1024, the evaluation input size)')
  parser.add_argument('--normalization', choices=('caffe', 'imagenet'), default='caffe')
  parser.add_argument('--batch-size', type=int, default=4,
                      help='images per step (rounded up to the local device count)')
  parser.add_argument('--outputs', default=None,
                      help=f'comma-separated subset of {",".join(OUTPUTS)} (default: all of them; '
                      'label_ids only for 19-class networks)')
  parser.add_argument('--compute-dtype', choices=('float32', 'bfloat16'), default='float32')
  parser.add_argument('--threads', type=int, default=2, help='decoding and writing threads each')
  return parser


def _main(args: argparse.Namespace) -> int:
  spec = cli.model_spec(args.model)
  input_size = args.input_size
  cityscapes = spec['num_classes'] == labels_lib.NUM_CLASSES
  if args.outputs is None:
    args.outputs = ','.join(k for k in OUTPUTS if cityscapes or k not in CITYSCAPES_ONLY)
  kinds = [k for k in args.outputs.split(',') if k]
  unknown = sorted(set(kinds) - set(OUTPUTS))
  if unknown or not kinds:
    raise errors.UserError(f'--outputs {args.outputs}: expected a comma-separated subset of '
                           f'{",".join(OUTPUTS)}')
  cityscapes_only = [k for k in kinds if k in CITYSCAPES_ONLY]
  if cityscapes_only and not cityscapes:
    raise errors.UserError(
        f'--outputs {",".join(cityscapes_only)}: Cityscapes label ids need a network of '
        f'{labels_lib.NUM_CLASSES} classes; {args.model} has {spec["num_classes"]} (use '
        f'train_ids, color or overlay)')
  if args.batch_size < 1 or args.threads < 1:
    raise errors.UserError('--batch-size and --threads: expected positive integers')
  items, total = image_inputs.find_inputs(args.input)
  segmenter = Segmenter(args.model, input_size=input_size, normalization=args.normalization,
                        batch_size=args.batch_size, compute_dtype=args.compute_dtype)
  count, failures = predict_all(segmenter, items, args.out, kinds, total, args.threads)
  size = 'own size' if input_size is None else f'input {input_size[0]}x{input_size[1]}'
  print(f'predicted {count} images with {segmenter.spec["arch"]} ({size}) into {args.out} '
        f'({", ".join(kinds)}); {len(failures)} unreadable inputs skipped')
  return 1 if failures else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The CLI; returns the exit status (2: bad usage, reported in one line on stderr)."""
  return cli.run(_main, _parser(), argv)


if __name__ == '__main__':
  sys.exit(main())
