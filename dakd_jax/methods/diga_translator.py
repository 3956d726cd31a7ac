"""DiGA's image translator training (`train_domain_translator.py`; method.md §6.1): the stage
that produces the translator CrDoMix uses.

The trained network is `diga_cycle_translator`: encoders enc_s, enc_t and decoders dec_s2t,
dec_t2s (`DiGACycleTranslator.cycle`). Its players are two multi-scale LSGAN discriminators,
`dis_s2t` (real: target images; fake: s2t translations) and `dis_t2s` (real: source images; fake:
t2s translations). Official update order (`players_first`): both discriminators step on the
current translator's gradient-stopped translations, then the translator's loss is taken through
the *updated* discriminators:

  lambda_adv * [G(dis_s2t(s2t)) + G(dis_t2s(t2s))]            LSGAN generator terms, 0.5
  + lambda_cyc * [L1(cycle_s, x_s) + L1(cycle_t, x_t)]        10
  + lambda_seg_edge * L1 on the source label edges(s2t, x_s)  20
  + lambda_percep * [P(s2t, x_s) + P(t2s, x_t)]               0.1, VGG-19 (frozen role 'vgg')
  + lambda_self * [L1(self_s, x_s) + L1(self_t, x_t)]          0.001

where self_s = dec_t2s(enc_s(x_s)) and self_t = dec_s2t(enc_t(x_t)) (the official "self
reconstruction" decodes each image's content with the *other* domain's decoder). Losses:
`dakd_jax.translator_losses`. `lambda_percep=0` drops the perceptual term and the VGG role.
Images are NHWC in the stage's normalisation (DiGA: BGR minus the Caffe mean, / 128).
"""

import dataclasses
from typing import ClassVar

from dakd_jax import translator_losses as tl
from dakd_jax.methods import base

DISCRIMINATOR = 'multiscale_image_discriminator'
# Player -> (the translation it judges, the batch images it sees as real).
PLAYERS = {'dis_s2t': ('s2t', 'target_image'), 'dis_t2s': ('t2s', 'source_image')}


@dataclasses.dataclass(frozen=True)
class DiGATranslatorTraining(base.Method):
  """The translator's cycle, adversarial, perceptual, semantic-edge and self terms.

  Attributes:
    lambda_adv: weight of the LSGAN generator terms (0.5).
    lambda_cyc: weight of the cycle reconstructions (10).
    lambda_percep: weight of the VGG perceptual terms (0.1); 0 switches them and the frozen
      'vgg' network off.
    lambda_self: weight of the self reconstructions (0.001).
    lambda_seg_edge: weight of the semantic-edge L1 on the source translation (20).
    d_width: width of the discriminators' first conv (official 64).
  """
  name: ClassVar[str] = 'diga_translator'
  players_first: ClassVar[bool] = True
  lambda_adv: float = 0.5
  lambda_cyc: float = 10.0
  lambda_percep: float = 0.1
  lambda_self: float = 0.001
  lambda_seg_edge: float = 20.0
  d_width: int = 64

  def __post_init__(self):
    for field in ('lambda_adv', 'lambda_cyc', 'lambda_percep', 'lambda_self', 'lambda_seg_edge'):
      if getattr(self, field) < 0:
        raise ValueError(f'{field}: expected a non-negative weight, got {getattr(self, field)!r}')
    if self.d_width < 1:
      raise ValueError(f'd_width: expected a positive int, got {self.d_width!r}')

  @property
  def frozen(self) -> tuple[str, ...]:
    return ('vgg',) if self.lambda_percep > 0 else ()

  def players(self, num_classes):
    del num_classes  # The discriminators see images.
    return {name: base.Player(DISCRIMINATOR, 3, (('width', self.d_width),)) for name in PLAYERS}

  def frozen_outputs(self, frozen, batch):
    """The VGG features function [N, H, W, 3] -> its five maps (None without the term)."""
    del batch
    if 'vgg' not in frozen:
      return None
    vgg = frozen['vgg']
    return lambda images: vgg.module.apply(vgg.variables, images)

  def forward(self, network, variables, inputs, key):
    """`{'source', 'target'}` images -> every image of `DiGACycleTranslator.cycle` (no BN)."""
    del key  # No dropout.
    outputs = network.apply({'params': variables['params']}, inputs['source'], inputs['target'],
                            method='cycle')
    return outputs, variables['batch_stats']

  def player_inputs(self, outputs, batch, context):
    del context
    return {name: (batch[real], outputs[fake]) for name, (fake, real) in PLAYERS.items()}

  def player_loss(self, name, apply, inputs):
    """LSGAN: real images scored 1, gradient-stopped translations 0, summed over scales."""
    real, fake = inputs[name]
    return tl.lsgan_discriminator_loss(apply(real), apply(fake))

  def network_terms(self, outputs, batch, players, frozen_outputs):
    source, target = batch['source_image'], batch['target_image']
    terms = {
        'src/adv': self.lambda_adv * tl.lsgan_generator_loss(players['dis_s2t'](outputs['s2t'])),
        'tgt/adv': self.lambda_adv * tl.lsgan_generator_loss(players['dis_t2s'](outputs['t2s'])),
        'src/cyc': self.lambda_cyc * tl.l1(outputs['source_cycle'], source),
        'tgt/cyc': self.lambda_cyc * tl.l1(outputs['target_cycle'], target),
        'src/seg_edge': self.lambda_seg_edge * tl.semantic_edge_loss(
            outputs['s2t'], source, batch['source_label']),
        'src/self': self.lambda_self * tl.l1(outputs['source_self'], source),
        'tgt/self': self.lambda_self * tl.l1(outputs['target_self'], target),
    }
    if frozen_outputs is not None:
      terms['src/percep'] = self.lambda_percep * tl.perceptual_loss(
          frozen_outputs, outputs['s2t'], source)
      terms['tgt/percep'] = self.lambda_percep * tl.perceptual_loss(
          frozen_outputs, outputs['t2s'], target)
    return terms, {}
