"""GTA5 -> Cityscapes with a DeepLab-v2 ResNet-101 teacher adapted by MinEnt (ADVENT paper).

  python -m dakd_jax.main --config configs/gta2cs_minent.py --workdir runs/gta2cs_minent \
    --config.roots.gta5=/data/GTA5 --config.roots.cityscapes=/data/cityscapes \
    --config.networks.teacher.init=weights/deeplab_imagenet \
    --config.networks.student.init=weights/drn_d_22

The teacher minimises the weighted target entropy (method.md §3.2: 1e-3 main, 2e-4 aux) instead
of fooling discriminators, with ADVENT's schedule; not a pairing the DAKD paper reports.
"""

from dakd_jax import config as config_lib
from configs import gta2cs_advent


def get_config():
  config = gta2cs_advent.get_config()
  teacher = config.stages.teacher
  config_lib.set_method(teacher, 'minent')
  teacher.row = 'T: DeepLab-v2 R101 (MinEnt)'
  teacher.reference = 'ADVENT advent/scripts/train.py (configs/minent.yml)'
  return config
