"""AdaptSegNet (Tsai et al., CVPR 2018): multi-level output-space adversarial adaptation.

method.md §2: two FCDiscriminators, on the softmax of the auxiliary and of the main output. The
network minimises the source cross-entropy plus, on target images, the BCE of each discriminator
against the *source* label (0); each discriminator minimises ½ BCE(source → 0) + ½ BCE(target →
1) on gradient-stopped predictions. Both gradients come from the pre-update weights.
"""

import dataclasses
from typing import ClassVar

import jax

from dakd_jax import losses
from dakd_jax.methods import base

SOURCE, TARGET = 0.0, 1.0  # Domain labels of the official discriminators.
LEVELS = ('aux', 'main')


@dataclasses.dataclass(frozen=True)
class AdaptSegNet(base.Method):
  """Source segmentation + target adversarial terms at the aux and main levels.

  Attributes:
    lambda_seg_aux: weight of the auxiliary head's source cross-entropy (0.1).
    lambda_adv_aux: adversarial weight at the auxiliary ("feature") level (2e-4).
    lambda_adv_main: adversarial weight at the output level (1e-3).
    gan: 'bce' (vanilla GAN, the default) | 'lsgan' (MSE to the domain labels).
    ndf: width of the discriminators' first conv (64).
  """
  name: ClassVar[str] = 'adaptsegnet'
  lambda_seg_aux: float = 0.1
  lambda_adv_aux: float = 2e-4
  lambda_adv_main: float = 1e-3
  gan: str = 'bce'
  ndf: int = 64

  def __post_init__(self):
    if self.gan not in losses.GAN_MODES:
      raise ValueError(f'gan: expected one of {losses.GAN_MODES}, got {self.gan!r}')

  def discriminator_input(self, logits: jax.Array) -> jax.Array:
    """What the discriminators see of `[N, H, W, C]` logits: the class probabilities."""
    return jax.nn.softmax(logits, axis=-1)

  def players(self, num_classes):
    return {f'disc_{level}': base.Player('fc_discriminator', num_classes, (('ndf', self.ndf),))
            for level in LEVELS}

  def network_terms(self, outputs, batch, players, frozen_outputs):
    src, tgt = outputs['source'], outputs['target']
    terms = base.segmentation_terms(src, batch['source_label'], self.lambda_seg_aux)
    player_inputs = {}
    for level, weight in zip(LEVELS, (self.lambda_adv_aux, self.lambda_adv_main)):
      d_in_target = self.discriminator_input(tgt[level])
      # Fool the discriminator: target predictions labelled as source.
      terms[f'tgt/adv_{level}'] = weight * losses.adversarial_loss(
          players[f'disc_{level}'](d_in_target), SOURCE, gan=self.gan)
      player_inputs[f'disc_{level}'] = (self.discriminator_input(src[level]), d_in_target)
    return terms, player_inputs

  def player_loss(self, name, apply, inputs):
    """½ BCE(D(source), 0) + ½ BCE(D(target), 1) on gradient-stopped predictions."""
    source, target = inputs[name]
    return 0.5 * (losses.adversarial_loss(apply(source), SOURCE, gan=self.gan)
                  + losses.adversarial_loss(apply(target), TARGET, gan=self.gan))

