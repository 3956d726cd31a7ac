"""GTA5 -> Cityscapes with a DeepLab-v2 ResNet-101 teacher (AdaptSegNet), paper Table 2.

  python -m dakd_jax.main --config configs/gta2cs_deeplab.py --workdir runs/gta2cs_deeplab \
    --config.source.root=/data/GTA5 --config.target.root=/data/cityscapes \
    --config.teacher.trained=weights/adaptsegnet_gta2cs --config.student.init=weights/drn_d_22_imagenet

`teacher.trained` is AdaptSegNet's released GTA5->Cityscapes model converted with
`python -m dakd_jax.convert --model deeplabv2_r101 --aspp-branches 2 ...`; leave it empty and set
`teacher.init` to the converted DeepLab init to train the teacher here (AdaptSegNet settings:
heads x10 learning rate, frozen BatchNorm affine, 4 live ASPP branches unless 2 are asked for).
"""

from configs import gta2cs


def get_config():
  config = gta2cs.get_config()
  config.teacher.arch = 'deeplabv2_r101'
  config.teacher.options = {'aspp_branches': 4, 'freeze_bn_affine': True}
  return config
