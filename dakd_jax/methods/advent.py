"""ADVENT / AdvEnt (Vu et al., CVPR 2019): adversarial adaptation on entropy maps.

method.md §3: AdaptSegNet's game with one change, the discriminators see the weighted
self-information map `-p log2(p + 1e-30) / log2(C)` of the softmax instead of the softmax.
"""

import dataclasses
from typing import ClassVar

import jax

from dakd_jax import losses
from dakd_jax.methods import adaptsegnet


@dataclasses.dataclass(frozen=True)
class Advent(adaptsegnet.AdaptSegNet):
  """AdaptSegNet's options and terms; discriminator inputs are self-information maps."""
  name: ClassVar[str] = 'advent'

  def discriminator_input(self, logits: jax.Array) -> jax.Array:
    return losses.self_information(jax.nn.softmax(logits, axis=-1))
