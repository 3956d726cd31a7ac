"""Writing the synthetic datasets where the real loaders look (`generate`), with a manifest of
the parameters so that a complete tree is reused and a stale one redrawn; and its command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from typing import Any

import numpy as np
from PIL import Image

from dakd_jax.data import labels
from dakd_jax.data.synthetic.render import DOMAIN_CODES, SPLIT_CODES, render_scene, scene_rng

# GTA5 ships its label PNGs in palette mode: index = label id, colour = Cityscapes colour.
_GTA5_PALETTE = [c for i in range(256) for c in
                 next((l.color for l in labels.CITYSCAPES_LABELS if l.id == i), (0, 0, 0))]

# Bump whenever the drawing changes: the manifest then no longer matches and data is redrawn.
GENERATOR_VERSION = 2
MANIFEST_NAME = 'synthetic_manifest.json'
CITYSCAPES_CITIES = {'train': ('aachen', 'bochum', 'bremen', 'cologne'),
                     'val': ('frankfurt', 'lindau', 'munster')}


@dataclasses.dataclass(frozen=True)
class _Job:
  domain: str
  split: str
  index: int
  image_path: str
  label_path: str


def _bdd_name(seed: int, split: str, index: int) -> str:
  """A BDD100K-like name ('0a1b2c3d-4e5f6a7b'), unique per (seed, split, index)."""
  a, b = np.random.default_rng([seed, DOMAIN_CODES['bdd100k'], SPLIT_CODES[split], index,
                                7]).integers(0, 2**32, 2)
  return f'{int(a):08x}-{int(b):08x}'


def _jobs(out: str, params: dict[str, Any]) -> list[_Job]:
  seed = params['seed']
  jobs = []
  gta = os.path.join(out, 'gta5')
  for i in range(params['num_source']):
    name = f'{i + 1:05d}.png'
    jobs.append(_Job('gta5', 'train', i, os.path.join(gta, 'images', name),
                     os.path.join(gta, 'labels', name)))
  cs = os.path.join(out, 'cityscapes')
  for split, n in (('train', params['num_target_train']), ('val', params['num_target_val'])):
    cities = CITYSCAPES_CITIES[split]
    for i in range(n):
      city = cities[i % len(cities)]
      stem = f'{city}_{i // len(cities):06d}_000019'
      jobs.append(_Job('cityscapes', split, i,
                       os.path.join(cs, 'leftImg8bit', split, city, f'{stem}_leftImg8bit.png'),
                       os.path.join(cs, 'gtFine', split, city, f'{stem}_gtFine_labelIds.png')))
  if params['bdd']:
    bdd = os.path.join(out, 'bdd100k')
    for split, n in (('train', params['num_bdd_train']), ('val', params['num_bdd_val'])):
      for i in range(n):
        name = _bdd_name(seed, split, i)
        jobs.append(_Job('bdd100k', split, i,
                         os.path.join(bdd, 'images', '10k', split, f'{name}.jpg'),
                         os.path.join(bdd, 'labels', 'sem_seg', 'masks', split, f'{name}.png')))
  return jobs


def _write(job: _Job, seed: int, size: tuple[int, int]) -> None:
  image, label = render_scene(job.domain, scene_rng(seed, job.domain, job.split, job.index), size)
  for path in (job.image_path, job.label_path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  if job.domain == 'bdd100k':
    # BDD100K ships JPEG images and masks already in train ids (255 = ignore).
    Image.fromarray(image).save(job.image_path, quality=85)
    Image.fromarray(labels.ID_TO_TRAIN_ID[label]).save(job.label_path)
  elif job.domain == 'gta5':
    Image.fromarray(image).save(job.image_path)
    label_img = Image.fromarray(label).convert('P')
    label_img.putpalette(_GTA5_PALETTE)
    label_img.save(job.label_path)
  else:
    Image.fromarray(image).save(job.image_path)
    Image.fromarray(label).save(job.label_path)


def _write_all(jobs: list[_Job], seed: int, size: tuple[int, int]) -> None:
  for job in jobs:
    _write(job, seed, size)


def generate(out_dir: str, *, seed: int = 0, size: tuple[int, int] = (128, 256),
             num_source: int = 300, num_target_train: int = 300, num_target_val: int = 100,
             bdd: bool = False, num_bdd_train: int = 100, num_bdd_val: int = 50,
             overwrite: bool = False, num_workers: int = 1) -> dict[str, str]:
  """Writes the synthetic datasets under `out_dir` and returns {dataset name: root folder}.

  Roots: 'gta5' and 'cityscapes', plus 'bdd100k' when `bdd`. `size` is (H, W). A complete tree
  drawn with the same parameters (recorded in `synthetic_manifest.json`) is reused as is; on any
  mismatch the three dataset folders are removed and redrawn. `num_workers > 1` draws in
  subprocesses; the bytes do not depend on it.
  """
  h, w = (int(v) for v in size)
  counts = dict(num_source=num_source, num_target_train=num_target_train,
                num_target_val=num_target_val, num_bdd_train=num_bdd_train,
                num_bdd_val=num_bdd_val)
  if h < 32 or w < 32 or any(int(v) < 0 for v in counts.values()):
    raise ValueError(f'synthetic.generate: need size >= (32, 32) and counts >= 0, got size={size} '
                     f'and {counts}')
  params = dict(version=GENERATOR_VERSION, seed=int(seed), size=[h, w], bdd=bool(bdd),
                **{k: int(v) for k, v in counts.items()})
  out_dir = os.path.abspath(out_dir)
  roots = {'gta5': os.path.join(out_dir, 'gta5'), 'cityscapes': os.path.join(out_dir, 'cityscapes')}
  if bdd:
    roots['bdd100k'] = os.path.join(out_dir, 'bdd100k')
  jobs = _jobs(out_dir, params)
  manifest_path = os.path.join(out_dir, MANIFEST_NAME)
  manifest = None
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      manifest = json.load(f)
  if (not overwrite and manifest is not None and manifest.get('params') == params and
      all(os.path.exists(j.image_path) and os.path.exists(j.label_path) for j in jobs)):
    return roots
  trees = [os.path.join(out_dir, name) for name in ('gta5', 'cityscapes', 'bdd100k')]
  if manifest is None and not overwrite and any(os.path.exists(t) for t in trees):
    raise FileExistsError(f'{out_dir} holds gta5/cityscapes/bdd100k folders without '
                          f'{MANIFEST_NAME}; refusing to replace them (pass overwrite=True)')
  if os.path.exists(manifest_path):
    os.remove(manifest_path)  # the tree is incomplete until the manifest is written again
  for tree in trees:
    shutil.rmtree(tree, ignore_errors=True)
  if num_workers > 1 and len(jobs) > 1:
    import concurrent.futures  # pylint: disable=g-import-not-at-top
    import multiprocessing  # pylint: disable=g-import-not-at-top
    chunks = [jobs[i::num_workers] for i in range(num_workers)]
    # Spawned (not forked) workers: the parent may hold JAX's threads.
    with concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=multiprocessing.get_context('spawn')) as pool:
      for future in [pool.submit(_write_all, chunk, seed, (h, w)) for chunk in chunks]:
        future.result()
  else:
    _write_all(jobs, seed, (h, w))
  files = {name: sum(j.domain == name for j in jobs) for name in roots}
  with open(manifest_path, 'w') as f:
    json.dump({'params': params, 'images': files, 'roots': roots}, f, indent=2, sort_keys=True)
  return roots


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog='python -m dakd_jax.data.synthetic',
      description='Draw the synthetic GTA5 -> Cityscapes (-> BDD100K) pair in official layouts.')
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--height', type=int, default=128)
  parser.add_argument('--width', type=int, default=256)
  parser.add_argument('--num-source', type=int, default=300)
  parser.add_argument('--num-target-train', type=int, default=300)
  parser.add_argument('--num-target-val', type=int, default=100)
  parser.add_argument('--bdd', action='store_true', help='also write a BDD100K-style target')
  parser.add_argument('--num-bdd-train', type=int, default=100)
  parser.add_argument('--num-bdd-val', type=int, default=50)
  parser.add_argument('--overwrite', action='store_true')
  parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1))
  args = parser.parse_args(argv)
  start = time.time()
  roots = generate(args.out, seed=args.seed, size=(args.height, args.width),
                   num_source=args.num_source, num_target_train=args.num_target_train,
                   num_target_val=args.num_target_val, bdd=args.bdd,
                   num_bdd_train=args.num_bdd_train, num_bdd_val=args.num_bdd_val,
                   overwrite=args.overwrite, num_workers=args.workers)
  for name, root in roots.items():
    print(f'{name}: {root}')
  print(f'done in {time.time() - start:.1f}s')


