"""DiGA self-training (method.md §6.2): the warm-up's source terms plus threshold-free target
self-training on ClassMix/DACS images labelled by bilateral consensus.

Each step, after the warm-up's EMA teacher update and its teacher forward on [x_s; x_cdm]:
- the teacher (with features) runs on the target batch; its features' distances to the class
  centroids give ŷ_feat (softmax(-distance), upsampled, argmax); the pseudo-label of the frozen
  `labeler` (the warm-up network; 2-scale max fusion of its logits at the input and at half size)
  is kept where ŷ_feat agrees and set to 255 elsewhere (the consensus label);
- x_mix pastes floor(K / 2) random source classes (and the ignored pixels) of x_s onto the
  strongly augmented target (beta `target_beta`), y_mix pastes their labels onto the consensus;
- the centroids move towards per-image class means of teacher features, target images first
  (consensus label and teacher argmax agree) then the CrDoMix source images (label and teacher
  argmax agree); classes under 5 feature pixels are skipped.
The loss adds lambda_mix * CE(S(x_mix), y_mix) to the warm-up's terms (lambda_distil 0.25).

Deviations (named): the offline pseudo-labels are computed on the fly from the frozen warm-up
network on the training crop (the official script labels the full 1024x2048 image once, before
cropping); the centroid bank starts at zero and, with `start_mean`, takes running means of the
first 100 vectors per class (the official run loads centroids computed beforehand by
`calc_centroids.py`; `start_mean=False` then gives its pure moving average).
"""

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp

from dakd_jax import augment
from dakd_jax import centroids
from dakd_jax import evaluate
from dakd_jax import losses
from dakd_jax.methods import base
from dakd_jax.methods import diga

START_MEAN_COUNT = 100  # Official `start_mean`: running mean while a class has < 100 vectors.
FUSION_SCALES = (1.0, 0.5)  # The labeler's pseudo-labels: 2-scale max fusion, as evaluation.


@dataclasses.dataclass(frozen=True)
class DiGASelfTraining(diga.DiGAWarmUp):
  """Warm-up terms + CE on ClassMix images with consensus pseudo-labels.

  Attributes (besides the warm-up's):
    lambda_mix: weight of the mixed target cross-entropy (1.0).
    target_beta: blend of the target images' strong augmentation (0.3).
    centroid_momentum: the centroids' moving-average rate (1e-4).
    start_mean: running means for the first 100 vectors of each class (see the module docstring).
    feature_key: the network output the centroids live in ('features': DiGA's 256-d `feat`).
  """
  name: ClassVar[str] = 'diga_selftrain'
  lambda_distil: float = 0.25
  lambda_mix: float = 1.0
  target_beta: float = 0.3
  centroid_momentum: float = centroids.MOMENTUM
  start_mean: bool = True
  feature_key: str = 'features'

  @property
  def frozen(self) -> tuple[str, ...]:
    return super().frozen + ('labeler',)

  @property
  def uses_target(self) -> bool:
    return True

  def init_state(self, network_variables, network):
    state = super().init_state(network_variables, network)
    shapes = jax.eval_shape(
        functools.partial(network.clone(return_features=True).apply, train=False),
        network_variables, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    num_classes, dim = shapes['main'].shape[-1], shapes[self.feature_key].shape[-1]
    return {**state, 'centroids': jnp.zeros((num_classes, dim), jnp.float32),
            'centroid_counts': jnp.zeros((num_classes,), jnp.float32)}

  def frozen_outputs(self, frozen, batch):
    """The translator's image (if used) and the labeler's pseudo-labels of the target batch."""
    labeler, images = frozen['labeler'], batch['target_image']
    fused = evaluate.main_logits(labeler.module, labeler.variables, images, images.shape[1:3],
                                 scales=FUSION_SCALES)
    return {'translated': super().frozen_outputs(frozen, batch),
            'offline': jax.lax.stop_gradient(jnp.argmax(fused, axis=-1).astype(jnp.int32))}

  def prepare(self, state, batch, frozen_outputs, key, network):
    source_key, target_key, mix_key, aug_key = jax.random.split(key, 4)
    featured = network.clone(return_features=True)
    images, raw_source, teacher = self.source_views(
        state, batch, frozen_outputs['translated'], source_key, featured)
    raw_target, teacher = self.teacher_forward(teacher, batch['target_image'], featured,
                                               target_key)
    size = batch['target_image'].shape[1:3]
    bank = state.method_state['centroids']
    consensus = centroids.consensus_labels(
        frozen_outputs['offline'],
        centroids.centroid_labels(raw_target[self.feature_key], bank, size))

    source_labels = batch['source_label']
    chosen = augment.choose_half_of_classes(mix_key, source_labels, network.num_classes)
    mask = augment.class_mask(source_labels, chosen)
    target_view = augment.strong_augment(aug_key, batch['target_image'], self.target_beta)
    mixed = augment.mix(mask, batch['source_image'], target_view)
    mixed_labels = jnp.where(mask == 1, source_labels, consensus)

    n = source_labels.shape[0]
    feature_size = raw_target[self.feature_key].shape[1:3]
    counts = state.method_state['centroid_counts']
    for features, logits, labels in (
        (raw_target[self.feature_key], raw_target['main'], consensus),
        (raw_source[self.feature_key][n:], raw_source['main'][n:], source_labels)):
      means, valid = centroids.class_mean_features(
          features, logits, centroids.nearest_resize_labels(labels, feature_size))
      bank, counts = centroids.update_centroids(
          bank, counts, means, valid, self.centroid_momentum,
          START_MEAN_COUNT if self.start_mean else 0.0)

    teacher_logits = base.at_input_size(raw_source, images.shape[1:3])['main']
    return ({'source': images, 'mix': mixed},
            {'teacher': teacher_logits, 'mix_label': mixed_labels},
            {'teacher': teacher, 'centroids': bank, 'centroid_counts': counts})

  def network_terms(self, outputs, batch, players, frozen_outputs):
    terms, player_inputs = super().network_terms(outputs, batch, players, frozen_outputs)
    terms['tgt/mix_seg'] = self.lambda_mix * losses.segmentation_cross_entropy(
        outputs['mix']['main'], frozen_outputs['mix_label'], average=self.seg_average)
    return terms, player_inputs
