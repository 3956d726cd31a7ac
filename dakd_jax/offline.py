"""Passes over the target training split that a method asks for before its stage's first step.

- `write_pseudo_labels`: the frozen network `method.pseudo_labeler` labels every image of the
  target training split once, at the image's full resolution, its main logits max-fused over
  `method.pseudo_label_scales` (DiGA's `pseudolabel_generator.py`: scales 1 and 0.5), into
  `<stage_dir>/pseudo_labels/<name>.png`. The target stream then reads them in place of the
  dataset's labels (`Stream.pseudo_labels`), so they are resized, rescaled, cropped and flipped
  with their images.
- `initial_method_state`: `method.state_passes` passes of `method.state_pass` over the split's
  images in file order, unaugmented, resized to the target stream's size, with the network's
  step-0 weights (DiGA's `calc_centroids.py`: the class centroids, 5 passes at 512x1024).

Both depend only on the starting weights and the data. The pseudo-label directory appears
complete or not at all (written beside it, then renamed), and a resumed stage reuses it; the
method state of the passes is part of every checkpoint, so they run only at step 0.
"""

import functools
import os
import shutil

from absl import logging
import jax
from jax.experimental import multihost_utils
import tqdm

from dakd_jax import evaluate
from dakd_jax.data import pipeline as data_pipeline

PSEUDO_LABELS_SUBDIR = 'pseudo_labels'


def _split_of(stream: data_pipeline.Stream, size) -> data_pipeline.EvalSet:
  """The stream's split as an ordered evaluation set (no augmentation), images at `size`."""
  return data_pipeline.EvalSet(dataset=stream.dataset, root=stream.root, split=stream.split,
                               input_size=size, label_size=size,
                               normalization=stream.normalization,
                               num_classes=stream.num_classes)


def write_pseudo_labels(stage, run, stage_dir, labeler_variables, mesh) -> str:
  """`<stage_dir>/pseudo_labels`, written by the stage's pseudo-labeler unless already complete.

  Args:
    stage: the `StageSpec`; its method names the labeler (`pseudo_labeler`, a frozen role) and
      the fused scales; its target stream the split.
    run: the `RunSettings` (data directory, frozen networks' dtype).
    stage_dir: the stage directory.
    labeler_variables: the labeler's variables.
    mesh: the devices the images are sharded over.

  Returns:
    The directory of `<name>.png` 8-bit maps of the label set's ids, one per image, each of
    its label's full resolution.
  """
  out = os.path.join(stage_dir, PSEUDO_LABELS_SUBDIR)
  if os.path.isdir(out):
    logging.info('%s: pseudo-labels of %s found in %s', stage.name, stage.target.dataset, out)
    return out
  role = stage.method.pseudo_labeler
  spec = stage.frozen_networks[role]
  logging.info('%s: labelling %s %s with the frozen %s (%s, scales %s) into %s', stage.name,
               stage.target.dataset, stage.target.split, role, spec['arch'],
               stage.method.pseudo_label_scales, out)
  partial = out + '.partial'
  if jax.process_index() == 0:
    shutil.rmtree(partial, ignore_errors=True)
  multihost_utils.sync_global_devices('pseudo-labels started')
  labeler = evaluate.Evaluator(
      _split_of(stage.target, None), batch_size=stage.batch_size,
      num_classes=spec['num_classes'], compute_dtype=run.frozen_dtype or run.compute_dtype,
      data_dir=run.data_dir, mesh=mesh, scales=stage.method.pseudo_label_scales)
  written = labeler.write_predictions(spec, labeler_variables, partial)
  multihost_utils.sync_global_devices('pseudo-labels written')
  if jax.process_index() == 0:
    os.replace(partial, out)
  multihost_utils.sync_global_devices('pseudo-labels complete')
  logging.info('%s: %d pseudo-labels written by this process', stage.name, written)
  return out


def initial_method_state(stage, run, method_state, network, network_variables):
  """The method state after `stage.method.state_passes` passes of `state_pass` over the target
  training split (every process reads the whole split and computes the same state).

  Args:
    stage: the `StageSpec`.
    run: the `RunSettings` (data directory).
    method_state: the step-0 method state (host or device arrays).
    network: the trained network's module.
    network_variables: its step-0 variables.

  Returns:
    The method state, as host arrays.
  """
  method = stage.method
  stream = stage.target
  one_batch = jax.jit(functools.partial(method.state_pass, network=network))
  variables = {k: v for k, v in jax.device_get(network_variables).items()
               if k in ('params', 'batch_stats')}
  state = jax.device_get(method_state)
  split = _split_of(stream, stream.size)
  total = data_pipeline.num_examples(split, data_dir=run.data_dir)
  batches_per_pass = -(-total // stage.batch_size)
  with tqdm.tqdm(total=method.state_passes * batches_per_pass, desc=f'{stage.name} state passes',
                 leave=False, disable=jax.process_index() != 0, dynamic_ncols=True) as bar:
    for _ in range(method.state_passes):
      for batch in data_pipeline.make_eval_dataset(split, batch_size=stage.batch_size,
                                                   data_dir=run.data_dir, shard_index=0,
                                                   shard_count=1):
        state = one_batch(state, variables=variables, images=batch['image'])
        bar.update(1)
  logging.info('%s: method state initialised by %d passes over %d images of %s %s', stage.name,
               method.state_passes, total, stream.dataset, stream.split)
  return jax.device_get(state)

