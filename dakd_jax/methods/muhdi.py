"""MuHDi (Saporta et al., CVPR-W 2022): continual UDA with multi-head distillation (method.md §7.2).

One step of a sequence of target domains, from the previous step's network. The network is
`muhdi_deeplabv2_r101`: target-agnostic heads ('aux', 'main', the evaluated ones) and
target-specialist heads ('aux_specialist', 'main_specialist'). Per iteration, as the official
`train_advent_muhdi`:

- source: cross-entropy of the *specialist* heads (main + `lambda_seg_aux` x aux); POD-local
  distillation of the four stage outputs from the frozen previous model (`lambda_feat`); KL from
  the previous model's to the agnostic heads' stride-8 logits (`lambda_kt`, aux x
  `lambda_seg_aux`);
- target: ADVENT's adversarial terms on the specialist heads (entropy-map discriminators), and
  the agnostic heads distilled from the gradient-stopped specialist heads at input resolution
  (`lambda_kt_target`, aux x `lambda_seg_aux`; KL, or MSE of the softmaxes).

The frozen previous model ('previous') is the previous step's network in inference mode: its
agnostic heads and stage outputs are what is distilled (a 2-head DeepLab after the ADVENT step;
a MuHDi network after a MuHDi step, whose specialist heads are then unused). The KL is the
official `kl_divergence`: KL(p_teacher || p_student) averaged over N x H x W x C elements.
"""

import dataclasses
from typing import ClassVar

import jax

from dakd_jax import losses
from dakd_jax.methods import advent
from dakd_jax.methods import base

TEACHER_LOSSES = {'kl': losses.class_mean_kl, 'mse': losses.softmax_mse}
SPECIALIST = {'aux': 'aux_specialist', 'main': 'main_specialist'}


@dataclasses.dataclass(frozen=True)
class MuHDi(advent.Advent):
  """ADVENT's options (applied to the specialist heads) plus the distillation terms.

  Attributes:
    lambda_feat: POD-local feature distillation weight (FEAT_LAMBDA, 1e-5).
    lambda_kt: source logit distillation weight from the previous model (KT_LAMBDA, 1e-5).
    lambda_kt_target: specialist-to-agnostic distillation weight (LAMBDA_KT_TARGET, 1.0).
    teacher_loss: 'kl' (TEACHER_LOSS 'KL', official default) | 'mse' (softmax MSE).
    pod_scales: POD-local spatial-pyramid scales ((1, 2, 4)).
  """
  name: ClassVar[str] = 'muhdi'
  frozen: ClassVar[tuple[str, ...]] = ('previous',)
  lambda_feat: float = 1e-5
  lambda_kt: float = 1e-5
  lambda_kt_target: float = 1.0
  teacher_loss: str = 'kl'
  pod_scales: tuple[int, ...] = (1, 2, 4)

  def __post_init__(self):
    super().__post_init__()
    if self.teacher_loss not in TEACHER_LOSSES:
      raise ValueError(f'teacher_loss: expected one of {tuple(TEACHER_LOSSES)}, got '
                       f'{self.teacher_loss!r}')
    if not self.pod_scales or any(int(s) < 1 for s in self.pod_scales):
      raise ValueError(f'pod_scales: expected positive ints, got {self.pod_scales!r}')

  def frozen_outputs(self, frozen, batch):
    """The previous model on the source images (inference mode), with its stage outputs."""
    return frozen['previous'](batch['source_image'], train=False, features=True)

  def network_terms(self, outputs, batch, players, frozen_outputs):
    src, tgt, old = outputs['source'], outputs['target'], frozen_outputs
    specialist = {domain: {level: outputs[domain][head] for level, head in SPECIALIST.items()}
                  for domain in ('source', 'target')}
    # Source CE and target adversarial terms, discriminator inputs: ADVENT on the specialists.
    adapt, player_inputs = super().network_terms(specialist, batch, players, None)
    terms = {k: v for k, v in adapt.items() if k.startswith('src/')}
    if self.lambda_feat:
      terms['src/pod'] = self.lambda_feat * losses.pod_local_distillation(
          src['attentions'], old['attentions'], tuple(self.pod_scales))
    if self.lambda_kt:
      new8, old8 = src[base.STRIDE8_KEY], old[base.STRIDE8_KEY]
      terms['src/kt_main'] = self.lambda_kt * losses.class_mean_kl(new8['main'], old8['main'])
      terms['src/kt_aux'] = self.lambda_kt * self.lambda_seg_aux * losses.class_mean_kl(
          new8['aux'], old8['aux'])
    terms.update({k: v for k, v in adapt.items() if k.startswith('tgt/')})
    if self.lambda_kt_target:
      distil = TEACHER_LOSSES[self.teacher_loss]
      for level, weight in (('main', 1.0), ('aux', self.lambda_seg_aux)):
        terms[f'tgt/kt_{level}'] = self.lambda_kt_target * weight * distil(
            tgt[level], jax.lax.stop_gradient(tgt[SPECIALIST[level]]))
    return terms, player_inputs
