"""DiGA warm-up (Shen et al., CVPR 2023; method.md §6.2): symmetric distillation from an EMA teacher
on source data only, with the cross-domain mixture (CrDoMix).

Each step, before the gradient (official order): the teacher's parameters become
`a * teacher + (1 - a) * student` with `a = min(1 - 1 / (i + 1), ema_max)` (i the 0-based step; at
step 0 the teacher is the student). The source images x_s get a strongly augmented view x_aug
(`dakd_jax.augment`); CrDoMix keeps x_aug on half of the classes present in each image (and on the
ignored pixels) and takes the translated image x_s2t elsewhere. Student and teacher (train mode,
no gradient) both see the concatenation [x_s; x_cdm]. The loss is

  lambda_seg * CE(S(x_s), y_s) + lambda_distil * [H(T(x_s), S(x_cdm)) + alpha * H(T(x_cdm), S(x_s))]

with DiGA's averaging: the CE's sum over valid pixels is divided by every pixel, and the soft
cross-entropies are plain means over every pixel (`distil_mask=True`: over non-ignored pixels).

The teacher (parameters and its own BatchNorm statistics) is the method state: checkpointed with
the train state, so a resumed run continues the same average.
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from dakd_jax import augment
from dakd_jax import losses
from dakd_jax.methods import base

TRANSLATIONS = ('network', 'colour_stats')
TEACHER_BN = ('train', 'eval')
SEG_AVERAGES = ('all', 'valid')
SEG_LOSSES = ('ce', 'ohem')


def ema_decay(step: jax.Array, ema_max: float) -> jax.Array:
  """DiGA's teacher decay min(1 - 1 / (step + 1), ema_max): the true mean over the first steps."""
  return jnp.minimum(1.0 - 1.0 / (step.astype(jnp.float32) + 1.0), ema_max)


def ema_update(teacher, student, decay: jax.Array):
  """`decay * teacher + (1 - decay) * student`, leaf by leaf (same tree structure)."""
  return jax.tree.map(lambda t, s: decay * t + (1.0 - decay) * s, teacher, student)


@dataclasses.dataclass(frozen=True)
class DiGAWarmUp(base.Method):
  """Source CE + symmetric EMA-teacher distillation on [x_s; CrDoMix(x_s)].

  Attributes:
    lambda_seg: weight of the source cross-entropy (1.0).
    lambda_distil: weight of the symmetric distillation (0.5).
    alpha: weight of the second direction, H(T(x_cdm), S(x_s)) (0.5).
    distil_mask: average the soft cross-entropies over non-ignored pixels only (official: off).
    seg_average: 'all' (DiGA: the valid pixels' sum over every pixel) | 'valid'.
    seg_loss: 'ce' (DiGA's GTA5 scripts) | 'ohem' (its SYNTHIA scripts: `ohem_cross_entropy`
      with `ohem_thresh` 0.7 and `ohem_min_kept` 100,000; then `seg_average` plays no part).
    beta: blend of the strong augmentation (0.4).
    jitter_p, gray_p: the strong augmentation's colour-jitter and grayscale probabilities (0.5,
      0.3; the SYNTHIA warm-up: 0.7, 0.1).
    crdomix: mix in the translated image (off: x_aug alone, the "distil" ablation row).
    translation: how x_s2t is made. 'network': DiGA's frozen translator (`diga_translator`,
      the stage's `frozen.translator`; inputs in the 'diga' normalisation, as it was trained);
      'colour_stats': each target image's channel statistics imposed on its source image, a
      stand-in needing no trained translator (a deviation).
    ema_max: the teacher's largest decay (0.999).
    teacher_bn: 'train' (official: batch statistics, dropout on) | 'eval'.
  """
  name: ClassVar[str] = 'diga_warmup'
  lambda_seg: float = 1.0
  lambda_distil: float = 0.5
  alpha: float = 0.5
  distil_mask: bool = False
  seg_average: str = 'all'
  seg_loss: str = 'ce'
  ohem_thresh: float = 0.7
  ohem_min_kept: int = 100_000
  beta: float = 0.4
  jitter_p: float = augment.PROBS['jitter']
  gray_p: float = augment.PROBS['gray']
  crdomix: bool = True
  translation: str = 'network'
  ema_max: float = 0.999
  teacher_bn: str = 'train'

  def __post_init__(self):
    for field, value, valid in (('translation', self.translation, TRANSLATIONS),
                                ('teacher_bn', self.teacher_bn, TEACHER_BN),
                                ('seg_average', self.seg_average, SEG_AVERAGES),
                                ('seg_loss', self.seg_loss, SEG_LOSSES)):
      if value not in valid:
        raise ValueError(f'{field}: expected one of {valid}, got {value!r}')
    if not 0 <= self.ema_max < 1:
      raise ValueError(f'ema_max: expected a value in [0, 1), got {self.ema_max!r}')
    for field in ('beta', 'jitter_p', 'gray_p'):
      if not 0 <= getattr(self, field) <= 1:
        raise ValueError(f'{field}: expected a value in [0, 1], got {getattr(self, field)!r}')

  @property
  def frozen(self) -> tuple[str, ...]:
    return ('translator',) if self.crdomix and self.translation == 'network' else ()

  @property
  def uses_target(self) -> bool:
    # With 'colour_stats' the target images lend their statistics; the network never sees them.
    return self.crdomix and self.translation == 'colour_stats'

  def frozen_outputs(self, frozen, batch):
    """x_s2t [N, H, W, 3]: the translator's image of the source batch (no gradient)."""
    if 'translator' not in self.frozen:
      return None
    translator = frozen['translator']
    return jax.lax.stop_gradient(
        translator.module.apply(translator.variables, batch['source_image']))

  def init_state(self, network_variables, network):
    """The teacher starts as a copy of the student (official `create_teacher_params`)."""
    del network
    return {'teacher': {'params': network_variables['params'],
                        'batch_stats': network_variables.get('batch_stats', {})}}

  def augmented_view(self, key, batch, translated, num_classes):
    """x_cdm [N, H, W, 3]: the strong view, CrDoMix-ed with the translated image if enabled."""
    aug_key, mix_key = jax.random.split(key)
    source = batch['source_image']
    strong = augment.strong_augment(aug_key, source, self.beta, self.augment_probs)
    if not self.crdomix:
      return strong
    if translated is None:
      translated = augment.colour_statistics_transfer(source, batch['target_image'])
    chosen = augment.choose_half_of_classes(mix_key, batch['source_label'], num_classes)
    return augment.mix(augment.class_mask(batch['source_label'], chosen), strong, translated)

  @property
  def augment_probs(self) -> dict[str, float]:
    """The strong augmentation's colour-jitter and grayscale probabilities (the rest: `PROBS`)."""
    return {'jitter': self.jitter_p, 'gray': self.gray_p}

  def segmentation_loss(self, logits, labels):
    """The supervised term's loss of `[N, H, W, C]` logits against `[N, H, W]` labels."""
    if self.seg_loss == 'ohem':
      return losses.ohem_cross_entropy(logits, labels, self.ohem_thresh, self.ohem_min_kept)
    return losses.segmentation_cross_entropy(logits, labels, average=self.seg_average)

  def averaged_teacher(self, state):
    """The teacher variables after this step's EMA update (before the step, as official)."""
    teacher = state.method_state['teacher']
    decay = ema_decay(state.step, self.ema_max)
    return {**teacher, 'params': ema_update(teacher['params'], state.network.params, decay)}

  def teacher_forward(self, teacher, images, network, key):
    """Raw teacher outputs on `images` (no gradient) and the teacher with its BN statistics."""
    if self.teacher_bn == 'train':
      raw, updates = network.apply(teacher, images, train=True, mutable=['batch_stats'],
                                   rngs={'dropout': key})
      return jax.lax.stop_gradient(raw), {**teacher, **updates}
    return jax.lax.stop_gradient(network.apply(teacher, images, train=False)), teacher

  def source_views(self, state, batch, translated, key, network):
    """[x_s; x_cdm], the teacher's raw outputs on them, the updated teacher."""
    view_key, dropout_key = jax.random.split(key)
    images = jnp.concatenate([batch['source_image'], self.augmented_view(
        view_key, batch, translated, network.num_classes)])
    raw, teacher = self.teacher_forward(self.averaged_teacher(state), images, network,
                                        dropout_key)
    return images, raw, teacher

  def prepare(self, state, batch, frozen_outputs, key, network):
    images, raw, teacher = self.source_views(state, batch, frozen_outputs, key, network)
    logits = base.at_input_size(raw, images.shape[1:3])['main']
    return {'source': images}, {'teacher': logits}, {'teacher': teacher}

  def network_terms(self, outputs, batch, players, frozen_outputs):
    labels = batch['source_label']
    n = labels.shape[0]
    student, teacher = outputs['source']['main'], frozen_outputs['teacher']
    mask = (labels != losses.IGNORE_LABEL) if self.distil_mask else None
    terms = {'src/seg': self.lambda_seg * self.segmentation_loss(student[:n], labels)}
    terms['src/distil'] = self.lambda_distil * losses.symmetric_distillation(
        student[:n], student[n:], teacher[:n], teacher[n:], self.alpha, mask)
    return terms, {}
