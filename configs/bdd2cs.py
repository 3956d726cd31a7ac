"""BDD100K -> Cityscapes, the paper's real-to-real scenario (Table 1 (I)).

  python -m dakd_jax.main --config configs/bdd2cs.py --workdir runs/bdd2cs \
    --config.source.root=/data/bdd100k --config.target.root=/data/cityscapes \
    --config.teacher.init=weights/drn_d_38_imagenet --config.student.init=weights/drn_d_22_imagenet

The released code ships only BDD loaders for this pair, no training script: the sizes below keep
BDD100K at its native 16:9 aspect and otherwise reuse the GTA5 -> Cityscapes settings.
"""

from configs import gta2cs


def get_config():
  config = gta2cs.get_config()
  config.source.dataset = 'bdd100k'
  config.source.size = (720, 1280)  # BDD100K is 720x1280; no aspect distortion.
  return config
