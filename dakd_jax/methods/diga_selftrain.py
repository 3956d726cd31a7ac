"""DiGA self-training (method.md §6.2): the warm-up's source terms plus threshold-free target
self-training on ClassMix/DACS images labelled by bilateral consensus.

Before the first step (`dakd_jax.offline`), as the official scripts do beforehand:
- the frozen `labeler` (the previous round's network) labels every target training image once at
  full resolution, the max of its logits at the image's size and at half size
  (`pseudolabel_generator.py`); these offline labels are then cropped and flipped with their
  images;
- the class centroids start from `centroid_passes` passes over the target training images
  (unaugmented, at the target stream's size) of the network the stage starts from: per image and
  predicted class, the mean 256-d feature, folded into running means (`calc_centroids.py`).

Each step, after the warm-up's EMA teacher update and its teacher forward on [x_s; x_cdm]:
- the teacher (with features) runs on the target batch; its features' distances to the class
  centroids give ŷ_feat (softmax(-distance), upsampled, argmax); the offline pseudo-label is kept
  where ŷ_feat agrees and set to 255 elsewhere (the consensus label);
- x_mix pastes floor(K / 2) random source classes (and the ignored pixels) of x_s onto the
  strongly augmented target (beta `target_beta`), y_mix pastes their labels onto the consensus;
- the centroids move towards per-image class means of teacher features, target images first
  (consensus label and teacher argmax agree) then the CrDoMix source images (label and teacher
  argmax agree); classes under 5 feature pixels are skipped.
The loss adds lambda_mix * CE(S(x_mix), y_mix) to the warm-up's terms (lambda_distil 0.25).

Options beside the official pipeline: `offline_labels=False` labels each training crop in the
step instead (the labeler's 2-scale fusion on the crop), and `centroid_passes=0` starts the bank
at zero, then best with `start_mean=True` (running means of the first 100 vectors per class).
"""

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp

from dakd_jax import augment
from dakd_jax import centroids
from dakd_jax import evaluate
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
    offline_labels: label the target split once before the first step (official) rather than
      each crop in the step.
    centroid_passes: passes over the target split that initialise the centroids (official 5;
      0 = a zero bank).
    start_mean: running means for a class's first 100 vectors in the step (official: off, the
      bank is initialised).
    feature_key: the network output the centroids live in ('features': DiGA's 256-d `feat`).
  """
  name: ClassVar[str] = 'diga_selftrain'
  pseudo_label_scales: ClassVar[tuple[float, ...]] = FUSION_SCALES
  lambda_distil: float = 0.25
  lambda_mix: float = 1.0
  target_beta: float = 0.3
  centroid_momentum: float = centroids.MOMENTUM
  offline_labels: bool = True
  centroid_passes: int = 5
  start_mean: bool = False
  feature_key: str = 'features'

  def __post_init__(self):
    super().__post_init__()
    if self.centroid_passes < 0:
      raise ValueError(f'centroid_passes: expected 0 or more, got {self.centroid_passes!r}')

  @property
  def frozen(self) -> tuple[str, ...]:
    return super().frozen + ('labeler',)

  @property
  def uses_target(self) -> bool:
    return True

  @property
  def pseudo_labeler(self) -> str:
    return 'labeler' if self.offline_labels else ''

  @property
  def state_passes(self) -> int:
    return self.centroid_passes

  def state_pass(self, method_state, network, variables, images):
    """`calc_centroids.py` on one batch: per image and predicted class the mean feature of the
    network in inference mode, folded into running means (count capped at 3000)."""
    outputs = network.clone(return_features=True).apply(variables, images, train=False)
    means, valid = centroids.class_mean_features(outputs[self.feature_key], outputs['main'])
    bank, counts = centroids.update_centroids(
        method_state['centroids'], method_state['centroid_counts'], means, valid,
        self.centroid_momentum, mean_below=float('inf'))
    return {**method_state, 'centroids': bank, 'centroid_counts': counts}

  def init_state(self, network_variables, network):
    state = super().init_state(network_variables, network)
    shapes = jax.eval_shape(
        functools.partial(network.clone(return_features=True).apply, train=False),
        network_variables, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    num_classes, dim = shapes['main'].shape[-1], shapes[self.feature_key].shape[-1]
    return {**state, 'centroids': jnp.zeros((num_classes, dim), jnp.float32),
            'centroid_counts': jnp.zeros((num_classes,), jnp.float32)}

  def frozen_outputs(self, frozen, batch):
    """The translator's image (if used) and the pseudo-labels of the target batch: the offline
    ones the batch carries, or the labeler's on the crop."""
    if self.offline_labels:
      offline = batch['target_label']
    else:
      labeler, images = frozen['labeler'], batch['target_image']
      fused = evaluate.main_logits(labeler.module, labeler.variables, images, images.shape[1:3],
                                   scales=FUSION_SCALES)
      offline = jax.lax.stop_gradient(jnp.argmax(fused, axis=-1).astype(jnp.int32))
    return {'translated': super().frozen_outputs(frozen, batch), 'offline': offline}

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
    target_view = augment.strong_augment(aug_key, batch['target_image'], self.target_beta,
                                         self.augment_probs)
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
    terms['tgt/mix_seg'] = self.lambda_mix * self.segmentation_loss(
        outputs['mix']['main'], frozen_outputs['mix_label'])
    return terms, player_inputs
