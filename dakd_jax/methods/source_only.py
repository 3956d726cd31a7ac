"""Source only: supervised training on the labelled source, the 'no adaptation' baseline."""

import dataclasses
from typing import ClassVar

from dakd_jax.methods import base


@dataclasses.dataclass(frozen=True)
class SourceOnly(base.Method):
  """CE(main) + `lambda_seg_aux` CE(aux) on source images; the target is never read.

  Attributes:
    lambda_seg_aux: weight of the auxiliary head's cross-entropy (AdaptSegNet's 0.1).
  """
  name: ClassVar[str] = 'source_only'
  lambda_seg_aux: float = 0.1

  @property
  def uses_target(self) -> bool:
    return False

  def network_terms(self, outputs, batch, players, frozen_outputs):
    return base.segmentation_terms(outputs['source'], batch['source_label'],
                                   self.lambda_seg_aux), {}
