"""SKD (Liu et al., CVPR 2019): structured knowledge distillation for semantic segmentation.

method.md §5: a frozen teacher (eval mode) and the student see the same labelled images. The
student minimises CE(main) + 0.4 CE(dsn) (logits upsampled to the label size), plus
`lambda_pi` x pixel-wise distillation on the stride-8 score maps, `lambda_pa` x pair-wise
distillation on the PSP-bottleneck features (`main_features`), and `lambda_d` x the holistic
generator loss -mean D(student map). The holistic discriminator (a training-mode player: batch
statistics, one power iteration per forward) minimises `lambda_d` x [critic loss(D(teacher
map), D(student map)) + `lambda_gp` x gradient penalty] on gradient-stopped maps. Both gradients
come from the pre-update weights (SKD steps G, then D with the pre-update D's G gradient).
Official weights by default (`skd_losses.OFFICIAL_WEIGHTS`); the paper's: `lambda_pa=10`.
"""

import dataclasses
from typing import ClassVar

import jax

from dakd_jax import skd_losses
from dakd_jax.methods import base
from dakd_jax.models.layers import resize_align_corners

DISCRIMINATOR = 'disc_holistic'
TEACHER_BN = ('eval', 'train')


def matched(teacher: jax.Array, student: jax.Array) -> jax.Array:
  """The teacher's map resized (align corners) to the student's H, W when they differ."""
  if teacher.shape[1:3] == student.shape[1:3]:
    return teacher
  return resize_align_corners(teacher, student.shape[1:3])


@dataclasses.dataclass(frozen=True)
class StructuredTerms:
  """SKD's three distillation terms between one student and one teacher output dict.

  Shared by the `skd` method (source images) and by DAKD's optional structured terms.

  Attributes:
    lambda_pi: pixel-wise distillation weight (10).
    lambda_pa: pair-wise distillation weight (0.5 official; the paper's 10).
    lambda_d: holistic (adversarial) weight, also scaling the discriminator's loss (0.1); 0 = no
      discriminator.
    lambda_gp: gradient-penalty weight inside the discriminator's loss (10).
    adv_loss: 'wgan-gp' | 'hinge' (`skd_losses.critic_loss`).
    pool_scale: pair-wise node window as a fraction of the feature map (0.5: 65 -> 3x3 nodes).
    conv_dim: the discriminator's first width (64).
    d_input_size: (H, W) the score maps are resized to before the discriminator; () = as they
      are (SKD: 65x65 maps; the discriminator needs at least 64x64).
  """
  lambda_pi: float = skd_losses.OFFICIAL_WEIGHTS['lambda_pi']
  lambda_pa: float = skd_losses.OFFICIAL_WEIGHTS['lambda_pa']
  lambda_d: float = skd_losses.OFFICIAL_WEIGHTS['lambda_d']
  lambda_gp: float = skd_losses.OFFICIAL_WEIGHTS['lambda_gp']
  adv_loss: str = 'wgan-gp'
  pool_scale: float = 0.5
  conv_dim: int = 64
  d_input_size: tuple[int, ...] = ()

  def check(self):
    if self.adv_loss not in skd_losses.ADV_KINDS:
      raise ValueError(f'adv_loss: expected one of {skd_losses.ADV_KINDS}, got {self.adv_loss!r}')
    if len(self.d_input_size) not in (0, 2):
      raise ValueError(f'd_input_size: expected () or (H, W), got {self.d_input_size!r}')

  @property
  def enabled(self) -> bool:
    """Whether any SKD term is on (DAKD's options leave them off by default)."""
    return bool(self.lambda_pi or self.lambda_pa or self.lambda_d)

  def player(self, num_classes: int) -> dict[str, base.Player]:
    if not self.lambda_d:
      return {}
    return {DISCRIMINATOR: base.Player('skd_discriminator', num_classes,
                                       (('conv_dim', self.conv_dim),), train=True)}

  def discriminator_input(self, logits: jax.Array) -> jax.Array:
    """What the discriminator sees: the raw stride-8 logits, resized if `d_input_size`."""
    if not self.d_input_size or tuple(logits.shape[1:3]) == tuple(self.d_input_size):
      return logits
    return resize_align_corners(logits, self.d_input_size)

  def terms(self, student, teacher, players, rng, scale=1.0):
    """`({name: weighted term}, discriminator inputs or None)` for one domain's outputs.

    `student`/`teacher` are output dicts (`base.at_input_size`); `rng` draws the gradient
    penalty's per-sample alpha.
    """
    s_map = student[base.STRIDE8_KEY]['main']
    t_map = matched(teacher[base.STRIDE8_KEY]['main'], s_map)
    terms = {}
    if self.lambda_pi:
      terms['pixelwise'] = scale * self.lambda_pi * skd_losses.pixelwise_distillation(s_map, t_map)
    if self.lambda_pa:
      s_feat = student['main_features']
      terms['pairwise'] = scale * self.lambda_pa * skd_losses.pairwise_distillation(
          s_feat, matched(teacher['main_features'], s_feat), self.pool_scale)
    if not self.lambda_d:
      return terms, None
    fake, real = self.discriminator_input(s_map), self.discriminator_input(t_map)
    terms['holistic'] = scale * self.lambda_d * skd_losses.generator_loss(
        players[DISCRIMINATOR](fake))
    alpha = jax.random.uniform(rng, (fake.shape[0],))
    return terms, (real, fake, skd_losses.interpolate(real, fake, alpha))

  def discriminator_loss(self, apply: base.PlayerCall, inputs) -> jax.Array:
    """lambda_d x [critic(D(real), D(fake)) + lambda_gp x GP]; D calls in SKD's order."""
    real, fake, interpolated = inputs
    d_real = apply(real)
    d_fake = apply(fake)
    loss = skd_losses.critic_loss(d_real, d_fake, self.adv_loss)
    if self.adv_loss == 'wgan-gp' and self.lambda_gp:
      state = apply.state
      penalty, apply.state = skd_losses.gradient_penalty(
          lambda x: apply.apply(state, x), interpolated, has_aux=True)
      loss = loss + self.lambda_gp * penalty
    return self.lambda_d * loss


@dataclasses.dataclass(frozen=True)
class SKD(StructuredTerms, base.Method):
  """Supervised segmentation plus SKD's pixel-, pair-wise and holistic distillation.

  Attributes (besides `StructuredTerms`'):
    lambda_seg_aux: weight of the DSN head's cross-entropy (0.4).
    teacher_bn: 'eval' (SKD: the teacher in eval mode) | 'train'.
  """
  name: ClassVar[str] = 'skd'
  frozen: ClassVar[tuple[str, ...]] = ('teacher',)
  lambda_seg_aux: float = 0.4
  teacher_bn: str = 'eval'

  def __post_init__(self):
    if self.teacher_bn not in TEACHER_BN:
      raise ValueError(f'teacher_bn: expected one of {TEACHER_BN}, got {self.teacher_bn!r}')
    self.check()

  @property
  def uses_target(self) -> bool:
    return False

  @property
  def needs_features(self) -> bool:
    return bool(self.lambda_pa)

  def players(self, num_classes):
    return self.player(num_classes)

  def frozen_outputs(self, frozen, batch):
    # In train mode the teacher's dropout draws from its own key (the terms use batch['rng']).
    return frozen['teacher'](batch['source_image'], train=self.teacher_bn == 'train',
                             features=self.needs_features, rng=jax.random.fold_in(batch['rng'], 1))

  def network_terms(self, outputs, batch, players, frozen_outputs):
    source = outputs['source']
    terms = base.segmentation_terms(source, batch['source_label'], self.lambda_seg_aux)
    distilled, d_inputs = self.terms(source, frozen_outputs, players, batch['rng'])
    terms.update({f'src/{k}': v for k, v in distilled.items()})
    return terms, {DISCRIMINATOR: d_inputs} if d_inputs is not None else {}

  def player_loss(self, name, apply, inputs):
    if name != DISCRIMINATOR:
      return super().player_loss(name, apply, inputs)
    return self.discriminator_loss(apply, inputs[name])
