"""MinEnt (ADVENT paper, Vu et al., CVPR 2019): direct entropy minimisation on the target.

method.md §3.2: L = [CE(main) + 0.1 CE(aux)]_source + 1e-3 E(P_t^main) + 2e-4 E(P_t^aux), with E
the mean normalised pixel entropy (`losses.entropy_loss`). No discriminator.
"""

import dataclasses
from typing import ClassVar

from dakd_jax import losses
from dakd_jax.methods import base


@dataclasses.dataclass(frozen=True)
class MinEnt(base.Method):
  """Source segmentation + weighted target entropy at the aux and main levels.

  Attributes:
    lambda_seg_aux: weight of the auxiliary head's source cross-entropy (0.1).
    lambda_ent_aux: entropy weight of the auxiliary output (2e-4).
    lambda_ent_main: entropy weight of the main output (1e-3).
  """
  name: ClassVar[str] = 'minent'
  lambda_seg_aux: float = 0.1
  lambda_ent_aux: float = 2e-4
  lambda_ent_main: float = 1e-3

  def network_terms(self, outputs, batch, players, frozen_outputs):
    terms = base.segmentation_terms(outputs['source'], batch['source_label'],
                                    self.lambda_seg_aux)
    target = outputs['target']
    terms['tgt/ent_aux'] = self.lambda_ent_aux * losses.entropy_loss(target['aux'])
    terms['tgt/ent_main'] = self.lambda_ent_main * losses.entropy_loss(target['main'])
    return terms, {}
