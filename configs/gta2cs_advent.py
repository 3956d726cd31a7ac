"""GTA5 -> Cityscapes with a DeepLab-v2 ResNet-101 teacher adapted by ADVENT (Table 2).

  python -m dakd_jax.main --config configs/gta2cs_advent.py --workdir runs/gta2cs_advent \
    --config.roots.gta5=/data/GTA5 --config.roots.cityscapes=/data/cityscapes \
    --config.networks.teacher.init=weights/deeplab_imagenet \
    --config.networks.student.init=weights/drn_d_22

Only the teacher changes: AdvEnt (entropy-map discriminators, four ASPP branches) with ADVENT's
schedule, poly horizon 250k stopped at 120k. As in the paper's Table 2 the students keep
AdaptSegNet for their own adaptation and for the distillation stages.
"""

from configs import gta2cs_deeplab


def get_config():
  config = gta2cs_deeplab.get_config()
  teacher = config.stages.teacher
  teacher.method = 'advent'  # Same options as AdaptSegNet; D sees self-information maps.
  teacher.row = 'T: DeepLab-v2 R101 (ADVENT)'
  teacher.num_steps = 120_000
  teacher.reference = 'ADVENT advent/scripts/train.py (configs/advent.yml)'
  teacher.deviations = ("the 'last' checkpoint is reported; ADVENT's default picks the best on "
                        "the target val set (eval.select='best_oracle', eval.every=2000)")
  return config
