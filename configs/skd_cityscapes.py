"""Structured Knowledge Distillation on Cityscapes, as published (method.md §5.3).

Supervised Cityscapes fine train: PSPNet-R101 teacher (frozen, eval mode) into PSPNet-R18, random
scale (0.5-1.6) + mirror + 512x512 crop, batch 8, 40,000 steps; student SGD 1e-2, discriminator
SGD 4e-4 (momentum 0.9, weight decay 5e-4, poly 0.9), one D step per G step; evaluation on whole
1024x2048 images. Stages: `teacher` (supervised PSPNet-R101; point `stages.teacher.trained` at the
converted released teacher to skip it), `baseline` (the student without distillation, the
README's ResNet-18 row) and `skd` (pixel + pair + holistic, official weights).

  python -m dakd_jax.tools.convert --model pspnet_r101 --torch-checkpoint \
    CS_scenes_38413_0.7832.pth --out weights/skd_teacher
  python -m dakd_jax.main --config configs/skd_cityscapes.py --workdir runs/skd \
    --config.roots.cityscapes=/data/cityscapes --config.stages.teacher.trained=weights/skd_teacher \
    --config.networks.student.init=weights/pspnet_r18_imagenet

The paper's weights instead of the released script's: `--config.stages.skd.options.lambda_pa=10`.
"""

from dakd_jax import config as config_lib

FULL = (1024, 2048)
CROP = (512, 512)
SKD_SCRIPT = 'SKD run_train_val.sh / train_and_eval.py'
DEVIATIONS = ('BatchNorm + LeakyReLU for InPlace-ABN-Sync (same arithmetic, statistics over the '
              'global batch); mIoU is the mean over the classes present (SKD: over all 19, '
              'absent = 0; equal on Cityscapes val, where all 19 occur)')


def cityscapes_crops():
  """Cityscapes train at full size with SKD's random scale, mirror and 512x512 crop."""
  stream = config_lib.stream_config('cityscapes', FULL)
  stream.augment.random_scale = (0.5, 1.6)
  stream.augment.crop = CROP
  stream.augment.flip = True
  return stream


def get_config():
  config = config_lib.base_config()
  config.networks.teacher = config_lib.network_config('pspnet_r101')
  config.networks.student = config_lib.network_config('pspnet_r18')
  config.eval.dataset = 'cityscapes'
  config.eval.input_size = FULL  # Whole images, as SKD's evaluator.
  stage = lambda method, network, row, **kw: config_lib.stage_config(
      method, network, row=row, source=cityscapes_crops(), target=cityscapes_crops(),
      batch_size=8, num_steps=40_000, optim=config_lib.optim_config(
          lr=1e-2, d_lr=4e-4, d_optimizer='sgd'), **kw)
  config.stages.teacher = stage('source_only', 'teacher', 'T: PSPNet-R101', lambda_seg_aux=0.4,
                                reference='the released teacher (78.3 val mIoU)')
  config.stages.baseline = stage('source_only', 'student', 'S: PSPNet-R18', lambda_seg_aux=0.4,
                                 reference=f'{SKD_SCRIPT} with --pi/--pa/--ho off')
  config.stages.skd = stage('skd', 'student', 'S: PSPNet-R18 + SKD',
                            frozen={'teacher': 'stage:teacher'}, reference=SKD_SCRIPT,
                            deviations=DEVIATIONS)
  config.pipeline = ('teacher', 'baseline', 'skd')
  config.train.checkpoint_every = 2_000
  config.train.log_every = 100
  return config
