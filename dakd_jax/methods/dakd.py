"""DAKD (Kothandaraman et al., WACV-W 2021): domain adaptive knowledge distillation.

method.md §4: the student keeps its own adaptation losses (`adaptation`, AdaptSegNet in the paper)
and a frozen teacher adds, on the source and/or target images, output-level KL (weight
`lambda_kl`), feature-level KL (`lambda_kl * kl_aux_factor`), MSE at the feature level
(`lambda_mse`, on the aux-head log-probabilities as the released code, or on the tapped features)
and the cross-entropy to the teacher's arg-max labels (`lambda_ce`). Paradigms (a) source, (b)
target, (c) both (target terms scaled by `gamma`), (d) = (b) continued from a (c) student.
Optionally (off by default) SKD's pair-wise and holistic terms join the distillation on the same
domains (`lambda_pa_skd`, `lambda_d_skd`; `methods.skd.StructuredTerms`).
"""

import dataclasses
from typing import ClassVar

import jax

from dakd_jax import losses
from dakd_jax.methods import adaptsegnet
from dakd_jax.methods import base
from dakd_jax.methods import skd
from dakd_jax.models.layers import resize_align_corners

PARADIGMS = ('a', 'b', 'c', 'd')
MSE_TARGETS = ('aux_logprobs', 'features')
TEACHER_BN = ('eval', 'train')
DOMAINS = (('source', 'src/'), ('target', 'tgt/'))


@dataclasses.dataclass(frozen=True)
class DAKD(base.Method):
  """The student's adaptation terms plus teacher distillation terms per paradigm.

  Attributes:
    adaptation: the student's own adaptation method (its options nested under it).
    paradigm: 'a' (source), 'b' (target), 'c' (both), 'd' (target, from a (c) student).
    gamma: scale of the target distillation terms.
    lambda_kl: output-level KL weight; the feature-level KL weighs `lambda_kl * kl_aux_factor`.
    kl_aux_factor: 0.1 (the paper's one-tenth; the released code reuses lambda_seg_aux).
    kl_mode: 'paper' (KL(p_T || p_S)) | 'legacy_zero' | 'modern_surrogate' (the released call
      under old / new PyTorch; `losses.kl_distillation`).
    lambda_mse: weight of the feature-level MSE.
    mse_on: 'aux_logprobs' (released code) | 'features' (the paper; equal channel counts only).
    lambda_ce: weight of the pseudo-label cross-entropy.
    pseudo_label_threshold: teacher confidence under which a pixel is ignored (0 = every pixel).
    teacher_bn: 'eval' (running statistics) | 'train' (batch statistics, the released code).
    lambda_pa_skd: SKD pair-wise distillation on the `main_features` maps (0 = off).
    lambda_d_skd: SKD holistic distillation: a spectral-norm critic of teacher vs student score
      maps, WGAN-GP (0 = off, no discriminator).
    skd_conv_dim: the SKD discriminator's first width.
    skd_d_input_size: (H, W) the score maps are resized to for the SKD discriminator; () = as
      they are.
  """
  name: ClassVar[str] = 'dakd'
  frozen: ClassVar[tuple[str, ...]] = ('teacher',)
  adaptation: base.Method = adaptsegnet.AdaptSegNet()
  paradigm: str = 'c'
  gamma: float = 1.0
  lambda_kl: float = 0.1
  kl_aux_factor: float = 0.1
  kl_mode: str = 'paper'
  lambda_mse: float = 0.01
  mse_on: str = 'aux_logprobs'
  lambda_ce: float = 1.0
  pseudo_label_threshold: float = 0.0
  teacher_bn: str = 'eval'
  lambda_pa_skd: float = 0.0
  lambda_d_skd: float = 0.0
  skd_conv_dim: int = 64
  skd_d_input_size: tuple[int, ...] = ()

  def __post_init__(self):
    for field, value, valid in (('paradigm', self.paradigm, PARADIGMS),
                                ('kl_mode', self.kl_mode, losses.KL_MODES),
                                ('mse_on', self.mse_on, MSE_TARGETS),
                                ('teacher_bn', self.teacher_bn, TEACHER_BN)):
      if value not in valid:
        raise ValueError(f'{field}: expected one of {valid}, got {value!r}')
    if self.gamma < 0:
      raise ValueError(f'gamma: expected a non-negative number, got {self.gamma!r}')
    if not 0 <= self.pseudo_label_threshold < 1:
      raise ValueError(f'pseudo_label_threshold: expected a value in [0, 1), got '
                       f'{self.pseudo_label_threshold!r}')
    self.structured.check()

  @property
  def structured(self) -> skd.StructuredTerms:
    """SKD's pair-wise and holistic terms as configured (its pixel-wise term: DAKD's KL)."""
    return skd.StructuredTerms(lambda_pi=0.0, lambda_pa=self.lambda_pa_skd,
                               lambda_d=self.lambda_d_skd, conv_dim=self.skd_conv_dim,
                               d_input_size=self.skd_d_input_size)

  @property
  def scales(self) -> dict[str, float]:
    """Scale of the distillation terms per domain; a zero scale leaves them out of the graph."""
    return {'source': 1.0 if self.paradigm in ('a', 'c') else 0.0,
            'target': self.gamma if self.paradigm in ('b', 'c', 'd') else 0.0}

  @property
  def uses_target(self) -> bool:
    return self.adaptation.uses_target or self.scales['target'] > 0

  @property
  def teacher_features(self) -> bool:
    return self.mse_on == 'features' or bool(self.lambda_pa_skd)

  @property
  def needs_features(self) -> bool:
    return self.teacher_features or self.adaptation.needs_features

  def players(self, num_classes):
    return {**self.adaptation.players(num_classes), **self.structured.player(num_classes)}

  def frozen_outputs(self, frozen, batch):
    """The teacher's outputs at input size on each distilled domain's images."""
    teacher = frozen['teacher']
    return {domain: teacher(batch[f'{domain}_image'], train=self.teacher_bn == 'train',
                            features=self.teacher_features,
                            rng=jax.random.fold_in(batch['rng'], 1 + i))  # A teacher's dropout.
            for i, (domain, scale) in enumerate(self.scales.items()) if scale}

  def network_terms(self, outputs, batch, players, frozen_outputs):
    adaptation_terms, player_inputs = self.adaptation.network_terms(
        outputs, batch, players, None)
    distilled, critic_inputs = {}, []
    for i, (domain, scale) in enumerate(self.scales.items()):
      if scale:
        distilled[domain] = self.distillation_terms(outputs[domain], frozen_outputs[domain], scale)
        if not self.structured.enabled:
          continue
        structured, d_inputs = self.structured.terms(
            outputs[domain], frozen_outputs[domain], players, jax.random.fold_in(batch['rng'], i),
            scale)
        distilled[domain].update({f'skd_{k}': v for k, v in structured.items()})
        critic_inputs += [(scale, d_inputs)] if d_inputs is not None else []
    if critic_inputs:
      player_inputs = {**player_inputs, skd.DISCRIMINATOR: tuple(critic_inputs)}
    terms = {}
    for domain, prefix in DOMAINS:  # Source terms first, then target terms.
      terms.update({k: v for k, v in adaptation_terms.items() if k.startswith(prefix)})
      terms.update({prefix + k: v for k, v in distilled.get(domain, {}).items()})
    return terms, player_inputs

  def distillation_terms(self, student, teacher, scale):
    """Weighted KL, MSE and pseudo-label CE between student and teacher outputs of one domain."""
    terms = {}
    if self.lambda_kl:
      terms['kl_main'] = scale * self.lambda_kl * losses.kl_distillation(
          student['main'], teacher['main'], mode=self.kl_mode)
      terms['kl_aux'] = scale * self.lambda_kl * self.kl_aux_factor * losses.kl_distillation(
          student['aux'], teacher['aux'], mode=self.kl_mode)
    if self.lambda_mse:
      if self.mse_on == 'features':
        s_feat, t_feat = student['aux_features'], teacher['aux_features']
        if s_feat.shape[1:3] != t_feat.shape[1:3]:
          t_feat = resize_align_corners(t_feat, s_feat.shape[1:3])
        terms['mse'] = scale * self.lambda_mse * losses.mse_distillation(s_feat, t_feat)
      else:
        terms['mse'] = scale * self.lambda_mse * losses.mse_distillation(
            jax.nn.log_softmax(student['aux']), jax.nn.log_softmax(teacher['aux']))
    if self.lambda_ce:
      terms['pseudo_ce'] = scale * self.lambda_ce * losses.pseudo_label_cross_entropy(
          student['main'], teacher['main'], threshold=self.pseudo_label_threshold)
    return terms

  def player_loss(self, name, apply, inputs):
    if name == skd.DISCRIMINATOR:  # One critic for every distilled domain, scaled as its terms.
      return sum(scale * self.structured.discriminator_loss(apply, domain_inputs)
                 for scale, domain_inputs in inputs[name])
    return self.adaptation.player_loss(name, apply, inputs)

  def check_init(self, trained_by):
    if self.paradigm != 'd':
      return None
    options = (trained_by or {}).get('options', {})
    if (trained_by or {}).get('method') == self.name and options.get('paradigm') == 'c':
      return None
    origin = ('weights with no training record (converted or random)' if not trained_by else
              f"a network trained by {trained_by.get('method')} (stage "
              f"{trained_by.get('stage')!r}, paradigm {options.get('paradigm', '-')})")
    return ('paradigm (d) continues a student distilled with paradigm (c), but the initial '
            f'weights are {origin}')
