"""Evaluation on the target validation set, at full label resolution by default.

The network sees the image resized to the evaluation input size; its main logits are upsampled
with align-corners bilinear interpolation to the label's resolution (full: 1024x2048 for
Cityscapes; or the `label_size` labels were resized to), arg-maxed, and a CxC confusion matrix is
accumulated on device. With an output directory, written to `<out_dir>`:
  metrics.json   {"miou", the label set's subset means (e.g. "miou_13"), "pixel_acc",
                  "per_class_iou": {name: iou}, "num_images", "checkpoint_step"} (percentages;
                  null for classes absent from labels and predictions)
  pred/<name>.png, pred/<name>_color.png   train-id and colour predictions, named after inputs
  grid/<name>_{input,label,pred}.png, grid.png   input | ground truth | prediction for the first
                 `eval.num_grid_images` images (the pipeline composes its own grid from these)
"""

import functools
import json
import math
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import tqdm

from dakd_jax import errors
from dakd_jax import metrics as metrics_lib
from dakd_jax import networks as networks_lib
from dakd_jax import pictures
from dakd_jax import sharding
from dakd_jax.data import labels as labels_lib
from dakd_jax.data import pipeline as data_pipeline
from dakd_jax.data import transforms
from dakd_jax.models.layers import resize_align_corners

METRICS_FILE = 'metrics.json'
GRID_SUBDIR = 'grid'
GRID_TILES = ('input', 'label', 'pred')
GRID_TITLES = ('input', 'ground truth', 'prediction')


def main_logits(model, variables, images, size, scales=(1.0,)):
  """The main head's logits at `size`: float32 `[N, H, W, C]`.

  Args:
    model: a segmentation model (`networks.create_segmentation_model`).
    variables: its `{'params', 'batch_stats'}` (BatchNorm in inference mode).
    images: float32 `[N, h, w, 3]`, normalised as the network was trained.
    size: (H, W), e.g. the label's or the original image's resolution (may be symbolic).
    scales: input scales whose logits are fused by an element-wise max (DiGA: (1.0, 0.5)); the
      images are resized align-corners bilinear to ceil(scale * (h, w)) first.

  The network's main logits (output stride 8) are cast to float32 and upsampled align-corners
  bilinear to `size`.
  """
  fused = None
  for scale in scales:
    scaled = images if scale == 1.0 else resize_align_corners(
        images, tuple(math.ceil(scale * s) for s in images.shape[1:3]))
    outputs = model.apply(variables, scaled, train=False)
    logits = resize_align_corners(outputs['main'].astype(jnp.float32), size)
    fused = logits if fused is None else jnp.maximum(fused, logits)
  return fused


def predict_classes(model, variables, images, size, scales=(1.0,)):
  """The evaluation's prediction: uint8 train ids `[N, H, W]`, the arg-max over classes of
  `main_logits(model, variables, images, size, scales)`."""
  return jnp.argmax(main_logits(model, variables, images, size, scales),
                    axis=-1).astype(jnp.uint8)


def eval_step(model, num_classes, variables, images, labels, scales=(1.0,)):
  """Main-head prediction at label resolution and its confusion matrix (over the global batch)."""
  pred = predict_classes(model, variables, images, labels.shape[1:3], scales)
  return metrics_lib.confusion_matrix(pred, labels, num_classes), pred


def jit_eval_step(model, num_classes, mesh, scales=(1.0,)):
  """`eval_step` jitted over the mesh: variables replicated, images and labels batch-sharded."""
  repl, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  return jax.jit(functools.partial(eval_step, model, num_classes, scales=tuple(scales)),
                 in_shardings=(repl, batch_sharding, batch_sharding),
                 out_shardings=(repl, batch_sharding))


def global_batch_size(batch_size, mesh):
  """`batch_size` rounded up to a multiple of the mesh's devices."""
  return -(-batch_size // mesh.size) * mesh.size


def _local_rows(array):
  """This process's rows of a batch-sharded global array, in order."""
  shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards], axis=0)


def _padded_batches(examples, batch_size, min_batches):
  """Groups examples of one shape into fixed-size batches, padding with fully ignored dummies.

  Yields at least `min_batches` batches (dummies after the data runs out), so that every process
  runs the same number of collective steps when its shard is shorter than another's.
  """
  group, count, last = [], 0, None
  for example in examples:
    if group and example['label'].shape != group[0]['label'].shape:
      last = _stack(group, batch_size)
      yield last
      group, count = [], count + 1
    group.append(example)
    if len(group) == batch_size:
      last = _stack(group, batch_size)
      yield last
      group, count = [], count + 1
  if group:
    last = _stack(group, batch_size)
    yield last
    count += 1
  for _ in range(min_batches - count):
    yield _stack([], batch_size, template=last[0])


def _stack(group, batch_size, template=None):
  """Stacks `group` (or nothing, shaped like `template`) and pads it to `batch_size` with zero
  images and all-ignore labels; returns (host batch, names, images) of the real examples."""
  like = group[0] if group else {'image': template['image'][0], 'label': template['label'][0]}
  pad = {'image': np.zeros_like(like['image']),
         'label': np.full_like(like['label'], labels_lib.IGNORE_LABEL)}
  rows = group + [pad] * (batch_size - len(group))
  return ({'image': np.stack([r['image'] for r in rows]),
           'label': np.stack([r['label'] for r in rows]).astype(np.int32)},
          [g['name'] for g in group], [g['image'] for g in group])


def _unbatched(dataset):
  for batch in dataset:
    for i in range(len(batch['label'])):
      name = batch['name'][i]
      yield {'image': batch['image'][i], 'label': batch['label'][i],
             'name': name.decode() if isinstance(name, bytes) else str(name)}


def _save_prediction(pred_dir, name, pred, num_classes):
  Image.fromarray(pred).save(os.path.join(pred_dir, f'{name}.png'))
  Image.fromarray(labels_lib.colorize(pred, num_classes)).save(
      os.path.join(pred_dir, f'{name}_color.png'))


def labelled_grid(rows, titles, num_classes, tile_width=256):
  """The grid of `rows` of prediction tiles under a header of `titles`, over the legend of the
  `num_classes` label set."""
  label_set = labels_lib.label_set(num_classes)
  return pictures.picture_grid(rows, tile_width, titles=titles, class_names=label_set.names,
                               palette=label_set.palette)


class Evaluator:
  """Evaluates networks on one evaluation set; datasets prepared and steps compiled once.

  Args:
    eval_set: the split, input size, label size and normalisation.
    batch_size: global images per step (rounded up to the device count).
    num_classes: classes of the confusion matrix.
    compute_dtype: the networks' compute dtype.
    data_dir: where the TFDS copy is prepared.
    mesh: the ('data',) mesh (default: every device).
    scales: input scales max-fused by `main_logits` (default single scale).
  """

  def __init__(self, eval_set, *, batch_size, num_classes, compute_dtype, data_dir, mesh=None,
               scales=(1.0,)):
    self.eval_set, self.num_classes, self.compute_dtype = eval_set, num_classes, compute_dtype
    self.scales = tuple(scales)
    self.data_dir = data_dir
    self.mesh = mesh or sharding.make_mesh()
    self.local_batch = global_batch_size(batch_size, self.mesh) // jax.process_count()
    self._steps = {}

  def _step(self, spec):
    key = json.dumps(spec, sort_keys=True)
    if key not in self._steps:
      model = networks_lib.create_segmentation_model(spec, self.compute_dtype)
      self._steps[key] = jit_eval_step(model, self.num_classes, self.mesh, self.scales)
    return self._steps[key]

  def _predictions(self, spec, variables):
    """Yields `(confusion, host_batch, names, images, pred)` per batch of the split: the batch's
    confusion matrix and its global uint8 predictions `[B, H, W]` at label resolution (padded
    rows included), with this process's real examples' names and normalised images."""
    step = self._step({k: spec[k] for k in ('arch', 'num_classes', 'options')})
    variables = jax.device_put(
        {k: v for k, v in variables.items() if k in ('params', 'batch_stats')},
        sharding.replicated(self.mesh))
    dataset = data_pipeline.make_eval_dataset(self.eval_set, batch_size=self.local_batch,
                                              data_dir=self.data_dir)
    total = data_pipeline.num_examples(self.eval_set, data_dir=self.data_dir)
    if self.eval_set.num_images >= 0:
      total = min(total, self.eval_set.num_images)
    per_process = -(-total // jax.process_count())
    num_batches = -(-per_process // self.local_batch)
    batches = tqdm.tqdm(_padded_batches(_unbatched(dataset), self.local_batch, num_batches),
                        total=num_batches, desc=f'predicting with {spec["arch"]}', leave=False,
                        disable=jax.process_index() != 0, dynamic_ncols=True)
    for host_batch, names, images in batches:
      batch = sharding.to_global_batch(host_batch, self.mesh)
      conf, pred = step(variables, batch['image'], batch['label'])
      yield conf, host_batch, names, images, pred

  def write_predictions(self, spec, variables, out_dir):
    """Writes the prediction of every image of the split as `<out_dir>/<name>.png` (8-bit ids
    at label resolution), without scoring it: the labels give only the resolution. Returns the
    number of images this process wrote."""
    os.makedirs(out_dir, exist_ok=True)
    written = 0
    for _, _, names, _, pred in self._predictions(spec, variables):
      preds = _local_rows(pred)
      for i, name in enumerate(names):
        Image.fromarray(preds[i]).save(os.path.join(out_dir, f'{name}.png'))
      written += len(names)
    return written

  def __call__(self, spec, variables, out_dir=None, *, checkpoint_step=-1,
               save_predictions=False, num_grid_images=0):
    """Evaluates `variables` of the network `spec`; returns the metrics dict.

    Files (metrics.json, predictions, the grid) are written only when `out_dir` is given.
    """
    save = bool(out_dir) and save_predictions
    num_grid = num_grid_images if out_dir else 0
    pred_dir, grid_dir = (os.path.join(out_dir, 'pred'), os.path.join(out_dir, GRID_SUBDIR)) \
        if out_dir else (None, None)
    for directory in ((pred_dir,) if save else ()) + ((grid_dir,) if num_grid else ()):
      os.makedirs(directory, exist_ok=True)
    confusion = jnp.zeros((self.num_classes,) * 2, jnp.int32)
    grid_rows, num_images = [], 0
    for conf, host_batch, names, images, pred in self._predictions(spec, variables):
      confusion = confusion + conf
      num_images += len(names)
      if save or len(grid_rows) < num_grid:
        preds = _local_rows(pred)
        for i, name in enumerate(names):
          if save:
            _save_prediction(pred_dir, name, preds[i], self.num_classes)
          if len(grid_rows) < num_grid:
            row = [transforms.denormalize(images[i], self.eval_set.normalization),
                   labels_lib.colorize(host_batch['label'][i], self.num_classes),
                   labels_lib.colorize(preds[i], self.num_classes)]
            for tile, kind in zip(row, GRID_TILES):
              Image.fromarray(tile).save(os.path.join(grid_dir, f'{name}_{kind}.png'))
            grid_rows.append(row)
    # Every process holds the same global confusion matrix; the image count is summed likewise.
    num_images = int(sharding.process_sum(num_images))
    if int(confusion.sum()) == 0:
      raise errors.UserError(
          f'{self.eval_set.dataset} {self.eval_set.split}: every label pixel of the {num_images} '
          'evaluated images maps to ignore (255); the labels are not in the expected id space '
          '(label ids for Cityscapes/GTA5, train ids for BDD100K, SYNTHIA ids for SYNTHIA)')
    subsets = labels_lib.subset_means(self.num_classes)
    scores = metrics_lib.segmentation_metrics(np.asarray(confusion),
                                             labels_lib.class_names(self.num_classes), subsets)
    result = {'miou': scores['miou'], **{name: scores[name] for name in subsets},
              'pixel_acc': scores['pixel_acc'], 'per_class_iou': scores['per_class_iou'],
              'num_images': num_images, 'checkpoint_step': int(checkpoint_step)}
    if out_dir and jax.process_index() == 0:
      with open(os.path.join(out_dir, METRICS_FILE), 'w') as f:
        json.dump(result, f, indent=2, allow_nan=False)  # Undefined scores are null.
      if grid_rows:
        grid = labelled_grid(grid_rows, GRID_TITLES, self.num_classes)
        Image.fromarray(grid).save(os.path.join(out_dir, 'grid.png'))
    subset_text = ''.join(f', {name} {metrics_lib.format_score(result[name])}' for name in subsets)
    logging.info('evaluation of %s on %d images: mIoU %.2f%s, pixel acc %.2f', spec['arch'],
                 num_images, result['miou'], subset_text, result['pixel_acc'])
    return result
