"""grain input pipelines: the infinite training streams and the ordered evaluation stream.

Data flow: official folder --(TFDS builder, `prepare`)--> array_record under `data_dir` -->
`builder.as_data_source()` (raw bytes, SkipDecoding) --> grain MapDataset --> transforms.py -->
`to_iter_dataset` (threaded prefetch) --> per-host batches of NumPy arrays.

Training: shuffle -> repeat -> slice per host -> decode/preprocess -> batch. Slicing the global
shuffled stream `[shard_index::shard_count]` means the hosts' batches of one step together hold
the same examples as a single host's global batch, whatever the number of hosts. Every random
choice derives from (seed, position in the stream), and the iterator state is a position, so
`it.get_state()` / `it.set_state()` (and Orbax's grain handler) resume at exactly the next batch.
"""

import logging
import os
import pathlib
from typing import Any, Callable, Mapping

import grain
import jax
import tensorflow_datasets as tfds

from dakd_jax.data import transforms
from dakd_jax.data.builders import BUILDERS, OfficialLayoutBuilder

# Images decoded/resized in parallel threads (Pillow releases the GIL while decoding and
# resizing) and images kept ready ahead. One thread per core: on the 2-core development machine
# (throughput.py, loaded by other jobs) 1, 2 and 4 threads all gave 3-3.6 images/s at 512x1024, as
# decoding a 1914x1052 PNG alone takes ~0.2 s of one core. Order and results do not depend on it.
NUM_THREADS = min(8, os.cpu_count() or 1)
PREFETCH_IMAGES = 2 * NUM_THREADS


def _builder_class(cfg: Mapping[str, Any]) -> type[OfficialLayoutBuilder]:
  name = cfg['dataset']
  if name not in BUILDERS:
    raise ValueError(f'dataset: expected one of {sorted(BUILDERS)}, got {name!r}')
  return BUILDERS[name]


def prepare(domain_cfg: Mapping[str, Any], data_dir) -> OfficialLayoutBuilder:
  """Prepares (once) the TFDS array_record copy of `domain_cfg.root` under `data_dir`.

  Idempotent and fast when already prepared: only the dataset_info is read. Data prepared from a
  different root is an error rather than silently reused. Not safe to call from several processes
  on one shared `data_dir` at once: prepare on one process first.
  """
  cls = _builder_class(domain_cfg)
  root = pathlib.Path(os.path.expanduser(str(domain_cfg['root']))).resolve()
  builder = cls(data_dir=os.fspath(data_dir), file_format='array_record')
  if builder.is_prepared():
    recorded = builder.info.metadata.get('root')
    if recorded is not None and recorded != str(root):
      raise ValueError(f'{cls.name}: data under {builder.data_dir} was prepared from {recorded}, '
                       f'not {root}; delete it or use another data_dir')
    return builder
  cls.check_root(root)  # one-line errors before TFDS's own, longer ones
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(root)))
  return builder


def _data_source(cfg: Mapping[str, Any], data_dir):
  """The prepared split as a random-access sequence of raw records (encoded bytes, texts)."""
  builder = prepare(cfg, data_dir)
  split = cfg['split']
  if split.split('[')[0] not in builder.info.splits:  # 'train[:100]' slices are allowed
    raise ValueError(f'{builder.name}: split {split!r} not found under {cfg["root"]} (found '
                     f'{sorted(builder.info.splits)}); expected {type(builder).LAYOUT}')
  mismatches = builder.info.metadata.get('size_mismatches', 0)
  if mismatches:
    logging.warning('%s: %d image/label pairs differ in size; their labels are resized to the '
                    'image with NEAREST', builder.name, mismatches)
  skip = tfds.decode.SkipDecoding()
  return builder.as_data_source(split, decoders={'image': skip, 'label': skip}), type(builder)


def num_examples(domain_cfg: Mapping[str, Any], *, data_dir) -> int:
  """Number of examples in `domain_cfg.split` (prepares the dataset if needed)."""
  return len(_data_source(domain_cfg, data_dir)[0])


def _read_options() -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=NUM_THREADS, prefetch_buffer_size=PREFETCH_IMAGES)


def make_train_dataset(domain_cfg: Mapping[str, Any], *, global_batch_size: int, seed: int,
                       data_dir, shard_index: int | None = None,
                       shard_count: int | None = None) -> grain.IterDataset:
  """Infinite, shuffled training stream of this host's batches.

  Args:
    domain_cfg: `dataset`, `root`, `split`, `size` ((H, W) or None), `normalization`, `augment`
      (`random_scale` (lo, hi) | None, `crop` (H, W) | None, `flip` bool; may be absent).
    global_batch_size: batch over all hosts; each host yields global_batch_size // shard_count.
    seed: fixes the shuffle order and every random augmentation.
    data_dir: where the TFDS copy is prepared (see `prepare`).
    shard_index, shard_count: this host's slice; default `jax.process_index()/process_count()`.

  Returns:
    An IterDataset of {'image': float32 [B, H, W, 3], 'label': int32 [B, H, W]} (train ids).
  """
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  if global_batch_size % shard_count:
    raise ValueError(f'global_batch_size {global_batch_size} is not divisible by the '
                     f'{shard_count} hosts')
  source, cls = _data_source(domain_cfg, data_dir)
  augment = domain_cfg.get('augment') or {}
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  ds = ds[shard_index::shard_count]
  ds = ds.map(transforms.Decode(allow_size_mismatch=cls.ALLOW_SIZE_MISMATCH))
  if domain_cfg.get('size'):
    ds = ds.map(transforms.Resize(tuple(domain_cfg['size'])))
  if augment.get('random_scale'):
    ds = ds.random_map(transforms.RandomScale(tuple(augment['random_scale'])))
  ds = ds.map(transforms.ToArrays(domain_cfg.get('normalization', 'caffe'), cls.LABEL_SPACE))
  if augment.get('crop') or augment.get('flip'):
    crop = tuple(augment['crop']) if augment.get('crop') else None
    ds = ds.random_map(transforms.RandomCropFlip(crop, bool(augment.get('flip'))))
  ds = ds.to_iter_dataset(_read_options())
  return ds.batch(global_batch_size // shard_count, drop_remainder=True)


def prefetch_to_device(ds: grain.IterDataset, put: Callable[[Any], Any],
                       buffer_size: int) -> grain.IterDataset:
  """`ds` with every element passed through `put` (e.g. host batch -> sharded device arrays).

  With `buffer_size > 0` a background thread runs `put` and keeps `buffer_size` transferred
  elements ready, so neither batching nor the host-to-device copy waits on the train step. The
  iterator's state (`get_state`, Orbax's grain handler) is that of the last element *returned*,
  not of the prefetched ones, so a checkpoint resumes exactly. `buffer_size == 0`: `put` runs in
  the caller's thread. Call `close()` on the iterator to stop its thread.
  """
  ds = ds.map(put)
  return grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=buffer_size)


def make_eval_dataset(eval_cfg: Mapping[str, Any], *, data_dir, shard_index: int | None = None,
                      shard_count: int | None = None) -> grain.IterDataset:
  """Ordered, single pass over `eval_cfg.split`, labels at full resolution.

  Args:
    eval_cfg: as a domain config, plus `input_size` ((H, W) the image is resized to for the
      network; falls back to `size`; None keeps it), `batch_size` (default 1) and `num_images`
      (-1 = all, else the first n in file order). No augmentation.
    data_dir: where the TFDS copy is prepared.
    shard_index, shard_count: this host's interleaved slice of the (truncated) split; default
      `jax.process_index()/process_count()`.

  Returns:
    An IterDataset of {'image': float32 [B, h, w, 3], 'label': int32 [B, H, W] (full resolution),
    'name': str [B] (input file stems)}; the last batch may be smaller.
  """
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  source, cls = _data_source(eval_cfg, data_dir)
  ds = grain.MapDataset.source(source)
  if eval_cfg.get('num_images', -1) >= 0:
    ds = ds[:eval_cfg['num_images']]
  ds = ds[shard_index::shard_count]
  ds = ds.map(transforms.Decode(allow_size_mismatch=cls.ALLOW_SIZE_MISMATCH))
  input_size = eval_cfg.get('input_size') or eval_cfg.get('size')
  if input_size:
    ds = ds.map(transforms.Resize(tuple(input_size), resize_label=False))
  ds = ds.map(transforms.ToArrays(eval_cfg.get('normalization', 'caffe'), cls.LABEL_SPACE,
                                  keep_name=True))
  ds = ds.to_iter_dataset(_read_options())
  return ds.batch(eval_cfg.get('batch_size', 1), drop_remainder=False)
