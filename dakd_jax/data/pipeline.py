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

import dataclasses
import logging
import os
import pathlib
import shutil
from typing import Any, Callable, ClassVar

import grain
import jax
import tensorflow_datasets as tfds

from dakd_jax import errors
from dakd_jax.data import labels
from dakd_jax.data import transforms
from dakd_jax.data.builders import BUILDERS, OfficialLayoutBuilder

# Images decoded/resized in parallel threads (Pillow releases the GIL while decoding and
# resizing) and images kept ready ahead. One thread per core: on the 2-core development machine
# (throughput.py, loaded by other jobs) 1, 2 and 4 threads all gave 3-3.6 images/s at 512x1024, as
# decoding a 1914x1052 PNG alone takes ~0.2 s of one core. Order and results do not depend on it.
NUM_THREADS = min(8, os.cpu_count() or 1)
PREFETCH_IMAGES = 2 * NUM_THREADS


@dataclasses.dataclass(frozen=True)
class Augment:
  """Optional random augmentation of a training stream (the official UDA scripts use none).

  Attributes:
    random_scale: (lo, hi) factor range of a random rescale, or None.
    crop: (H, W) random crop after rescaling, or None.
    flip: random horizontal flip with probability 0.5.
    per_axis_scale: draw the rescale factor of each axis separately (DiGA).
    crop_redraws: redraw uninformative crops up to this many times (DiGA: 5; see
      `transforms.informative_crop`).
  """
  random_scale: tuple[float, float] | None = None
  crop: tuple[int, int] | None = None
  flip: bool = False
  per_axis_scale: bool = False
  crop_redraws: int = 0


@dataclasses.dataclass(frozen=True)
class Stream:
  """One training input stream: a split of an official dataset folder, preprocessed.

  Attributes:
    dataset: builder name ('gta5' | 'cityscapes' | 'bdd100k' | 'idd' | 'mapillary' |
      'synthia').
    root: the official extracted folder (see datasets/<name>/README.md).
    split: split of the builder ('train' | 'val'; TFDS slices such as 'train[:100]' work).
    size: (H, W) every image and label is resized to (bicubic / nearest), or None.
    sizes: sizes cycled over the examples in place of `size`: example k of this host's stream
      (position k % batch in its batch when the batch is a multiple of len(sizes)) is resized to
      sizes[k % len(sizes)]; () = `size` for every example. Needs `augment.crop`.
    normalization: 'caffe' (BGR minus mean, 0-255; official) | 'imagenet'.
    augment: random augmentation after the resize.
    num_classes: the label set labels are mapped to (19 Cityscapes classes, 7 MuHDi
      super-classes, 16 SYNTHIA classes; `labels.LABEL_SETS`).
    skip_unreadable: leave out an example whose image or label does not decode (see
      `transforms.Decode`) instead of stopping with its name.
    pseudo_labels: a directory of `<name>.png` pseudo-labels (label set ids at each image's
      size) that replace the dataset's labels before any resize or augmentation; '' = the
      dataset's own labels.
  """
  dataset: str
  root: str
  split: str = 'train'
  size: tuple[int, int] | None = None
  normalization: str = 'caffe'
  augment: Augment = Augment()
  num_classes: int = 19
  skip_unreadable: bool = False
  pseudo_labels: str = ''
  sizes: tuple[tuple[int, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """An ordered evaluation split.

  Attributes:
    dataset, root, split, normalization: as in `Stream`.
    input_size: (H, W) the image is resized to for the network, or None.
    label_size: (H, W) the label is resized to (nearest) before scoring, or None = its full
      resolution (the standard protocol; DAKD's `eval_cs.py` scored at 512x1024).
    num_images: the first n images in file order, -1 = all.
    num_classes: as in `Stream`.
    skip_unreadable: always False: evaluation never leaves an example out.
  """
  skip_unreadable: ClassVar[bool] = False
  dataset: str
  root: str
  split: str = 'val'
  input_size: tuple[int, int] | None = None
  label_size: tuple[int, int] | None = None
  normalization: str = 'caffe'
  num_images: int = -1
  num_classes: int = 19


def _builder_class(data: Stream | EvalSet) -> type[OfficialLayoutBuilder]:
  name = data.dataset
  if name not in BUILDERS:
    raise errors.UserError(f'dataset: expected one of {sorted(BUILDERS)}, got {name!r}')
  return BUILDERS[name]


# (dataset, prepared copy, root) whose files this process has checked against the copy.
_VERIFIED = set()


def prepare(data: Stream | EvalSet, data_dir) -> OfficialLayoutBuilder:
  """Prepares the TFDS array_record copy of `data.root` under `data_dir`, again if files changed.

  The copy records a fingerprint of the source files (paths, sizes, modification times); when it
  no longer matches (an image repaired, a label corrected, files added), the copy is prepared
  again with a warning saying so. Otherwise fast: the dataset_info is read and the files listed
  and stat'ed once per process. Data prepared from a different root is an error rather than
  silently reused. Not safe to call from several processes
  on one shared `data_dir` at once: prepare on one process first.
  """
  cls = _builder_class(data)
  root = pathlib.Path(os.path.expanduser(str(data.root))).resolve()
  builder = cls(data_dir=os.fspath(data_dir), file_format='array_record')
  if builder.is_prepared():
    recorded = builder.info.metadata.get('root')
    if recorded is not None and recorded != str(root):
      raise errors.UserError(f'{cls.name}: data under {builder.data_dir} was prepared from '
                             f'{recorded}, not {root}; delete it or use another data_dir')
    key = (cls.name, builder.data_dir, str(root))
    if key in _VERIFIED:
      return builder
    if builder.info.metadata.get('fingerprint') == cls.fingerprint(root, cls.check_root(root)):
      _VERIFIED.add(key)
      return builder
    logging.warning('%s: files under %s changed since they were prepared into %s (added, removed '
                    'or modified): preparing them again', cls.name, root, builder.data_dir)
    shutil.rmtree(builder.data_dir)
    builder = cls(data_dir=os.fspath(data_dir), file_format='array_record')
  cls.check_root(root)  # one-line errors before TFDS's own, longer ones
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(root)))
  return builder


def _data_source(data: Stream | EvalSet, data_dir):
  """The prepared split as a random-access sequence of raw records (encoded bytes, texts)."""
  builder = prepare(data, data_dir)
  split = data.split
  if split.split('[')[0] not in builder.info.splits:  # 'train[:100]' slices are allowed
    raise errors.UserError(f'{builder.name}: split {split!r} not found under {data.root} (found '
                           f'{sorted(builder.info.splits)}); expected {type(builder).LAYOUT}')
  mismatches = builder.info.metadata.get('size_mismatches', 0)
  if mismatches:
    logging.warning('%s: %d image/label pairs differ in size; their labels are resized to the '
                    'image with NEAREST', builder.name, mismatches)
  skip = tfds.decode.SkipDecoding()
  return builder.as_data_source(split, decoders={'image': skip, 'label': skip}), type(builder)


def check(data: Stream | EvalSet, data_dir) -> None:
  """Raises, before any training, the one-line error a later read of `data` would: a missing or
  empty split, or a first image/label pair that does not decode to an RGB image and an id map."""
  source, builder_cls = _data_source(data, data_dir)
  if not len(source):  # pylint: disable=g-explicit-length-test
    raise errors.UserError(f'{data.dataset}: split {data.split!r} under {data.root} is empty')
  if not data.skip_unreadable:
    transforms.Decode(allow_size_mismatch=builder_cls.ALLOW_SIZE_MISMATCH).map(source[0])


def num_examples(data: Stream | EvalSet, *, data_dir) -> int:
  """Number of examples in `data.split` (prepares the dataset if needed)."""
  return len(_data_source(data, data_dir)[0])


def _read_options() -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=NUM_THREADS, prefetch_buffer_size=PREFETCH_IMAGES)


def make_train_dataset(stream: Stream, *, global_batch_size: int, seed: int, data_dir,
                       shard_index: int | None = None, shard_count: int | None = None,
                       skipped: transforms.SkippedFiles | None = None) -> grain.IterDataset:
  """Infinite, shuffled training stream of this host's batches.

  Args:
    stream: what to read and how to preprocess it.
    global_batch_size: batch over all hosts; each host yields global_batch_size // shard_count.
    seed: fixes the shuffle order and every random augmentation.
    data_dir: where the TFDS copy is prepared (see `prepare`).
    shard_index, shard_count: this host's slice; default `jax.process_index()/process_count()`.
    skipped: with `stream.skip_unreadable`, records the examples left out (default: a new one).
      Batches stay full and the order of the readable examples is kept, so a resumed run reads
      what an uninterrupted one does.

  Returns:
    An IterDataset of {'image': float32 [B, H, W, 3], 'label': int32 [B, H, W]} (train ids).
  """
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  if global_batch_size % shard_count:
    raise ValueError(f'global_batch_size {global_batch_size} is not divisible by the '
                     f'{shard_count} hosts')
  source, cls = _data_source(stream, data_dir)
  augment = stream.augment
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  ds = ds[shard_index::shard_count]
  if stream.skip_unreadable:
    skipped = transforms.SkippedFiles() if skipped is None else skipped
  else:
    skipped = None
  ds = ds.map(transforms.Decode(allow_size_mismatch=cls.ALLOW_SIZE_MISMATCH, skipped=skipped,
                                pseudo_labels=stream.pseudo_labels))
  label_space = labels.CLASS_ID if stream.pseudo_labels else cls.LABEL_SPACE
  if stream.sizes:
    if not augment.crop:
      raise ValueError(f'{stream.dataset}: sizes {stream.sizes} need a crop to batch the images')
    ds = ds.map_with_index(transforms.CycledResize(tuple(map(tuple, stream.sizes)),
                                                   cls.PAD_LABEL))
  elif stream.size:
    ds = ds.map(transforms.Resize(tuple(stream.size), tuple(stream.size), cls.PAD_LABEL))
  if augment.random_scale:
    ds = ds.random_map(transforms.RandomScale(tuple(augment.random_scale),
                                              bool(augment.per_axis_scale)))
  ds = ds.map(transforms.ToArrays(stream.normalization, label_space, stream.num_classes))
  if augment.crop or augment.flip:
    crop = tuple(augment.crop) if augment.crop else None
    ds = ds.random_map(transforms.RandomCropFlip(crop, bool(augment.flip),
                                                 int(augment.crop_redraws)))
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


def make_eval_dataset(eval_set: EvalSet, *, batch_size: int, data_dir,
                      shard_index: int | None = None,
                      shard_count: int | None = None) -> grain.IterDataset:
  """Ordered, single pass over `eval_set.split` (the first `num_images` images when set).

  Args:
    eval_set: what to read; images are resized to `input_size`, labels to `label_size` (or
      kept at full resolution). No augmentation.
    batch_size: images per host batch.
    data_dir: where the TFDS copy is prepared.
    shard_index, shard_count: this host's interleaved slice of the (truncated) split; default
      `jax.process_index()/process_count()`.

  Returns:
    An IterDataset of {'image': float32 [B, h, w, 3], 'label': int32 [B, H, W], 'name': str [B]
    (input file stems)}; the last batch may be smaller.
  """
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  source, cls = _data_source(eval_set, data_dir)
  ds = grain.MapDataset.source(source)
  if eval_set.num_images >= 0:
    ds = ds[:eval_set.num_images]
  ds = ds[shard_index::shard_count]
  ds = ds.map(transforms.Decode(allow_size_mismatch=cls.ALLOW_SIZE_MISMATCH))
  if eval_set.input_size or eval_set.label_size:
    ds = ds.map(transforms.Resize(
        tuple(eval_set.input_size) if eval_set.input_size else None,
        tuple(eval_set.label_size) if eval_set.label_size else None, cls.PAD_LABEL))
  ds = ds.map(transforms.ToArrays(eval_set.normalization, cls.LABEL_SPACE,
                                        eval_set.num_classes, keep_name=True))
  ds = ds.to_iter_dataset(_read_options())
  return ds.batch(batch_size, drop_remainder=False)
