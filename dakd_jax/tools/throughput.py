"""Measures the training input pipeline's throughput (images/s) with the official preprocessing.

Without --root it writes a GTA5-layout fixture of 1914x1052 PNGs (smooth random scenes, so the
files compress about as well as real frames) under --workdir and measures on it:

  python -m dakd_jax.tools.throughput --height 512 --width 1024 --workdir /tmp/dakd_throughput
"""

import argparse
import os
import pathlib
import tempfile
import time

import numpy as np
from PIL import Image

from dakd_jax.data import pipeline


def write_fixture(root: pathlib.Path, num_images: int, height: int, width: int, seed: int = 0):
  """GTA5 layout: images/NNNNN.png (RGB) and labels/NNNNN.png (Cityscapes ids), `height`x`width`."""
  rng = np.random.default_rng(seed)
  (root / 'images').mkdir(parents=True, exist_ok=True)
  (root / 'labels').mkdir(parents=True, exist_ok=True)
  for i in range(1, num_images + 1):
    coarse = rng.integers(0, 256, (height // 32, width // 32, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
    noise = rng.integers(-8, 9, smooth.shape)
    image = np.clip(smooth.astype(np.int32) + noise, 0, 255).astype(np.uint8)
    ids = rng.integers(0, 34, (height // 64, width // 64), dtype=np.uint8)
    label = Image.fromarray(ids).resize((width, height), Image.NEAREST)
    Image.fromarray(image).save(root / 'images' / f'{i:05d}.png')
    label.save(root / 'labels' / f'{i:05d}.png')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--height', type=int, default=512, help='resize height (network input)')
  parser.add_argument('--width', type=int, default=1024, help='resize width (network input)')
  parser.add_argument('--root', help='an existing GTA5 tree; default: write a fixture')
  parser.add_argument('--workdir', help='holds the fixture and the prepared TFDS data')
  parser.add_argument('--num-images', type=int, default=24, help='fixture size')
  parser.add_argument('--batch-size', type=int, default=2)
  parser.add_argument('--warmup-batches', type=int, default=4)
  parser.add_argument('--batches', type=int, default=30, help='timed batches')
  parser.add_argument('--num-threads', type=int, default=pipeline.NUM_THREADS)
  parser.add_argument('--prefetch', type=int, default=pipeline.PREFETCH_IMAGES)
  args = parser.parse_args()

  workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='dakd_throughput_'))
  root = pathlib.Path(args.root) if args.root else workdir / 'gta5'
  if not args.root and not (root / 'images').is_dir():
    start = time.perf_counter()
    write_fixture(root, args.num_images, 1052, 1914)
    print(f'wrote {args.num_images} 1914x1052 images to {root} in '
          f'{time.perf_counter() - start:.1f}s')
  pipeline.NUM_THREADS, pipeline.PREFETCH_IMAGES = args.num_threads, args.prefetch
  stream = pipeline.Stream(dataset='gta5', root=str(root), size=(args.height, args.width))
  pipeline.prepare(stream, workdir / 'tfds')
  it = iter(pipeline.make_train_dataset(stream, global_batch_size=args.batch_size, seed=0,
                                        data_dir=workdir / 'tfds', shard_index=0, shard_count=1))
  for _ in range(args.warmup_batches):
    next(it)
  start = time.perf_counter()
  for _ in range(args.batches):
    batch = next(it)
  seconds = time.perf_counter() - start
  images = args.batches * args.batch_size
  print(f'{images / seconds:.1f} images/s ({images} images of {batch["image"].shape[1:]} in '
        f'{seconds:.1f}s; {args.num_threads} threads, prefetch {args.prefetch}, '
        f'{os.cpu_count()} CPUs)')


if __name__ == '__main__':
  main()
