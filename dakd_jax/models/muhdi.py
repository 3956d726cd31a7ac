"""MuHDi's DeepLab-v2 ResNet-101 (Saporta et al., CVPR-W 2022; method.md §7.1): four ASPP heads.

The backbone is ADVENT's DeepLab-v2 (`deeplab.DeepLabV2Multi`, four live ASPP branches). Two
heads are target-agnostic (`aux_head` on layer3, `main_head` on layer4; official `layer5`,
`layer6`: the heads that are evaluated) and two target-specialist (`aux_specialist_head`,
`main_specialist_head`; official `layer7`, `layer8`: trained on the current target only). The
network also returns its "attentions": the output of the last block of each of the four stages.
The official block keeps `att = out` and then applies an in-place ReLU, so what it returns is the
post-ReLU block output, i.e. the stage output; this port returns the same.

Initialisation of a continual step (`init_from_previous`, the loop of the official
`muhdi/scripts/train.py` for a trained `RESTORE_FROM`): every variable present in the previous
network is copied; then the previous *specialist* heads (if any) are copied again into the new
*agnostic* heads. Hence
- step 2 (from a 2-head ADVENT network): backbone and agnostic heads <- previous; specialist
  heads keep their fresh N(0, 0.01) weights and zero biases;
- step 3 (from a 4-head MuHDi network): backbone <- previous, agnostic heads <- previous
  specialist heads, specialist heads <- previous specialist heads.
The frozen previous model (`previous_model_variables`) is the previous backbone with the previous
agnostic heads, as a plain 2-head DeepLab (`deeplabv2_r101`).
"""

from typing import Any, ClassVar, Dict, Mapping

import flax.linen as nn
import jax

from dakd_jax.models.deeplab import DeepLabV2Multi

# Specialist head -> the agnostic head it is copied into when a step starts from a MuHDi network.
SPECIALIST_TO_AGNOSTIC = {'aux_specialist_head': 'aux_head', 'main_specialist_head': 'main_head'}


class MuHDiDeepLab(DeepLabV2Multi):
  """DeepLab-v2 R101 with agnostic and specialist aux/main heads and the stage outputs.

  Same attributes as `DeepLabV2Multi` (`aspp_branches` stays 4 in MuHDi). 46,702,960 parameters
  with 19 classes, 44,048,560 with 7.
  """
  HEAD_MODULES: ClassVar[tuple[str, ...]] = ('main_head', 'aux_head', 'main_specialist_head',
                                              'aux_specialist_head')

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> Dict[str, Any]:
    """Maps images [N, H, W, 3] to stride-8 logits and the stage outputs.

    Returns:
      `{'aux', 'main', 'aux_specialist', 'main_specialist'}`: [N, h, w, C] logits at output
      stride 8 (agnostic, then specialist; aux on layer3, main on layer4), and `'attentions'`:
      the four post-ReLU stage outputs, [N, h1, w1, 256] at stride 4 then [N, h, w, 512 / 1024 /
      2048] at stride 8. `return_features` adds 'aux_features'/'main_features' (layer3/layer4).
    """
    features = self.backbone(images, train)
    out = {'aux': self.head('aux_head')(features[2]),
           'main': self.head('main_head')(features[3]),
           'aux_specialist': self.head('aux_specialist_head')(features[2]),
           'main_specialist': self.head('main_specialist_head')(features[3]),
           'attentions': features}
    if self.return_features:
      out['aux_features'] = features[2]
      out['main_features'] = features[3]
    return out

  @staticmethod
  def init_from_previous(previous, fresh):
    """The starting variables of a step (`init_from_previous` below; `models.initialiser`)."""
    return init_from_previous(previous, fresh)


def init_from_previous(previous: Mapping[str, Any], fresh: Mapping[str, Any]) -> Dict[str, Any]:
  """Starting variables of a MuHDi step from the previous step's network (official rule).

  Args:
    previous: `{'params', 'batch_stats'}` of a `deeplabv2_r101` (2 heads, ADVENT) or a
      `muhdi_deeplabv2_r101` network.
    fresh: freshly initialised `muhdi_deeplabv2_r101` variables (same number of classes).

  Returns:
    `fresh` with every subtree the previous network has replaced by it, then each agnostic head
    replaced by the previous specialist head when the previous network has one.

  Raises:
    ValueError: a previous subtree that the MuHDi network does not have, or a shape mismatch.
  """
  out = {}
  for collection, tree in fresh.items():
    new = dict(tree)
    old = previous.get(collection, {})
    unknown = sorted(set(old) - set(new))
    if unknown:
      raise ValueError(f'previous network has modules {unknown} that MuHDi\'s network lacks')
    new.update(old)
    new.update({agnostic: old[specialist] for specialist, agnostic in
                SPECIALIST_TO_AGNOSTIC.items() if specialist in old})
    got = jax.tree.map(lambda x: x.shape, new)
    want = jax.tree.map(lambda x: x.shape, dict(tree))
    if got != want:
      raise ValueError('previous network does not match the MuHDi network\'s shapes (check '
                       'num_classes)')
    out[collection] = new
  return out


def previous_model_variables(previous: Mapping[str, Any]) -> Dict[str, Any]:
  """The frozen previous model of a step: the previous network without its specialist heads,
  i.e. `deeplabv2_r101` variables (backbone and agnostic heads)."""
  return {collection: {k: v for k, v in tree.items() if k not in SPECIALIST_TO_AGNOSTIC}
          for collection, tree in previous.items()}
