"""GTA5 -> Cityscapes with ADVENT adaptation (entropy-map discriminators) for teacher and student.

  python -m dakd_jax.main --config configs/gta2cs_advent.py --workdir runs/gta2cs_advent \
    --config.source.root=/data/GTA5 --config.target.root=/data/cityscapes
"""

from configs import gta2cs


def get_config():
  config = gta2cs.get_config()
  config.adapt.method = 'advent'  # D sees weighted self-information maps instead of softmax.
  return config
