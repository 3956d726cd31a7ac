"""BDD100K -> Cityscapes, the paper's real-to-real scenario (Table 1 (I)).

  python -m dakd_jax.main --config configs/bdd2cs.py --workdir runs/bdd2cs \
    --config.roots.bdd100k=/data/bdd100k --config.roots.cityscapes=/data/cityscapes \
    --config.networks.teacher.init=weights/drn_d_38 \
    --config.networks.student.init=weights/drn_d_22

The released code ships only BDD loaders for this pair, no training script: every stage keeps
the GTA5 -> Cityscapes settings with BDD100K as the source at its native 16:9 (720x1280).
"""

from configs import gta2cs


def get_config():
  config = gta2cs.get_config()
  for stage in config.stages.values():
    stage.source.dataset = 'bdd100k'
    stage.source.size = (720, 1280)  # BDD100K is 720x1280; no aspect distortion.
    stage.deviations = ('no BDD100K script was released: GTA5 -> Cityscapes settings, source '
                        'BDD100K at 720x1280')
  return config
