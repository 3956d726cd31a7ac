"""MuHDi's sequence GTA5 -> Cityscapes -> IDD -> Mapillary (7 super-classes), for MuHDi and for
the plain continual baseline, stage by stage as the official configs ran (method.md §7.3):

  python -m dakd_jax.main --config configs/muhdi_gta2cs2idd2mapillary.py --workdir runs/muhdi \
    --config.roots.gta5=/data/GTA5 --config.roots.cityscapes=/data/cityscapes \
    --config.roots.idd=/data/IDD --config.roots.mapillary=/data/mapillary \
    --config.networks.deeplab.init=weights/deeplab_imagenet

where `weights/deeplab_imagenet` is the DeepLab ImageNet initialisation converted as for
`configs/gta2cs_advent.py`, with `--num-classes 7`. Every step starts from the previous step's network and discriminators;
every network is evaluated on Cityscapes, IDD and Mapillary val at 640x320, and `continual.md`
tabulates mIoU per domain after each step with the forgetting on earlier targets.

Stages: `advent_cs` (ADVENT on Cityscapes, shared by both sequences); the baseline continues with
ADVENT on IDD then Mapillary (`baseline_idd`, `baseline_mapillary`); MuHDi with its 4-head
network and the previous step frozen (`muhdi_idd`, `muhdi_mapillary`).
"""

from dakd_jax import config as config_lib

SIZE = (320, 640)  # 640x320 (W x H) for every domain, training and test.
TARGETS = {'cs': 'cityscapes', 'idd': 'idd', 'mapillary': 'mapillary'}
# Official (EARLY_STOP, MAX_ITERS) per step.
ADVENT_STEPS = (120_000, 240_000)
MUHDI_STEPS = (60_000, 120_000)


def _step(config, method, network, target, steps, previous, row, reference, **options):
  stop, horizon = steps
  stage = config_lib.stage_config(
      method, network, row=row, source=config_lib.stream_config('gta5', SIZE),
      target=config_lib.stream_config(TARGETS[target], SIZE), batch_size=1, num_steps=stop,
      schedule_steps=horizon, optim=config_lib.optim_config(head_lr_mult=10.0),
      frozen={'previous': f'stage:{previous}'} if method == 'muhdi' else None,
      reference=reference,
      deviations="the 'last' checkpoint is reported; the official test mode picks the best on "
      "the target val set (eval.select='best_oracle')", **options)
  if previous:
    stage.init = stage.players = f'stage:{previous}'
  return stage


def get_config():
  config = config_lib.base_config()
  config.num_classes = 7  # flat, construction, object, nature, sky, human, vehicle.
  config.networks.deeplab = config_lib.network_config(
      'deeplabv2_r101', aspp_branches=4, freeze_bn_affine=True)
  config.networks.muhdi = config_lib.network_config(
      'muhdi_deeplabv2_r101', aspp_branches=4, freeze_bn_affine=True)
  config.eval.dataset = 'cityscapes'
  config.eval.also = ('idd', 'mapillary')
  config.eval.input_size = SIZE
  config.eval.label_size = SIZE  # Labels nearest-resized to 640x320 (OUTPUT_SIZE_TARGET).

  stages = config.stages
  stages.advent_cs = _step(config, 'advent', 'deeplab', 'cs', ADVENT_STEPS, '',
                           'GTA5 -> Cityscapes (ADVENT)', 'MuHDi gta2cityscapes_advent.yml')
  stages.baseline_idd = _step(config, 'advent', 'deeplab', 'idd', ADVENT_STEPS, 'advent_cs',
                              'baseline -> IDD', 'MuHDi gta2cityscapes2idd_baseline.yml')
  stages.baseline_mapillary = _step(
      config, 'advent', 'deeplab', 'mapillary', ADVENT_STEPS, 'baseline_idd',
      'baseline -> Mapillary', 'MuHDi gta2cityscapes2idd2mapillary_baseline.yml')
  stages.muhdi_idd = _step(config, 'muhdi', 'muhdi', 'idd', MUHDI_STEPS, 'advent_cs',
                           'MuHDi -> IDD', 'MuHDi gta2cityscapes2idd_muhdi.yml')
  stages.muhdi_mapillary = _step(
      config, 'muhdi', 'muhdi', 'mapillary', MUHDI_STEPS, 'muhdi_idd', 'MuHDi -> Mapillary',
      'MuHDi gta2cityscapes2idd2mapillary_muhdi.yml')
  config.pipeline = ('advent_cs', 'baseline_idd', 'baseline_mapillary', 'muhdi_idd',
                     'muhdi_mapillary')
  return config
