"""GTA5 -> Cityscapes with a DeepLab-v2 ResNet-101 teacher adapted by AdaptSegNet (Table 2).

  python -m dakd_jax.main --config configs/gta2cs_deeplab.py --workdir runs/gta2cs_deeplab \
    --config.roots.gta5=/data/GTA5 --config.roots.cityscapes=/data/cityscapes \
    --config.networks.teacher.init=weights/deeplab_init \
    --config.networks.student.init=weights/drn_d_22

The teacher stage runs AdaptSegNet's `train_gta2cityscapes_multi.py`: batch 1, GTA5 at 720x1280
and Cityscapes at 512x1024, poly horizon 250k stopped at 150k, heads at 10x the learning rate,
BatchNorm affine frozen (the network's own option, which also keeps it out of the optimiser).
`networks.teacher.init` is the DeepLab ImageNet/COCO init converted with `python -m
dakd_jax.tools.convert --model deeplabv2_r101`. To distil from AdaptSegNet's released model
instead, convert it with `--aspp-branches 2` and pass `--config.stages.teacher.trained=DIR`
(the stage is then evaluated, not trained). The students are AdaptSegNet DRN-D-22 as in gta2cs.
"""

from dakd_jax import config as config_lib
from configs import gta2cs

ADAPTSEGNET_SCRIPT = 'AdaptSegNet train_gta2cityscapes_multi.py'


def get_config():
  config = gta2cs.get_config()
  config.networks.teacher = config_lib.network_config(
      'deeplabv2_r101', aspp_branches=4, freeze_bn_affine=True)
  teacher = config.stages.teacher
  teacher.row = 'T: DeepLab-v2 R101 (AdaptSegNet)'
  teacher.batch_size = 1
  teacher.source.size = (720, 1280)  # GTA5 resized to 1280x720.
  teacher.target.size = (512, 1024)  # Cityscapes resized to 1024x512.
  teacher.num_steps, teacher.schedule_steps = 150_000, 250_000
  teacher.optim.head_lr_mult = 10.0
  teacher.reference = ADAPTSEGNET_SCRIPT
  teacher.deviations = ('all four ASPP branches live (the script sums two: aspp_branches=2 '
                        'reproduces it); no separate source-only DeepLab stage')
  return config
