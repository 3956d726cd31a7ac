"""SKD on the embedded synthetic pair's labelled Cityscapes-like split, on a CPU in minutes.

The stages of `configs/skd_cityscapes.py` (teacher, baseline, skd) with narrow PSPNets (the
R101 teacher at 1/4 of its channels, the R18 student at 1/8), 64x128 crops from 128x256 images,
batch 4, and the score maps resized to 64x64 before the discriminator (which needs at least
64x64; the 64x128 crops give 9x17 maps).

  python -m dakd_jax.main --config configs/skd_synthetic.py --workdir /tmp/skd \
    --config.seed=0
"""

from configs import skd_cityscapes

SIZE = (128, 256)
CROP = (64, 128)
STEPS = {'teacher': 600, 'baseline': 300, 'skd': 300}


def get_config():
  config = skd_cityscapes.get_config()
  config.synthetic.enabled = True
  config.synthetic.size = SIZE
  config.eval.input_size = SIZE
  config.networks.teacher.options.width = 0.25
  config.networks.student.options.width = 0.125
  for name, stage in config.stages.items():
    for stream in (stage.source, stage.target):
      stream.size = SIZE
      stream.augment.random_scale = (0.75, 1.25)
      stream.augment.crop = CROP
    stage.batch_size = 4
    stage.num_steps = STEPS[name]
    stage.schedule_steps = 0
    stage.optim.lr = 0.02
    stage.optim.d_lr = 4e-4
  config.stages.skd.options.conv_dim = 16
  config.stages.skd.options.d_input_size = (64, 64)
  config.train.log_every = 50
  config.train.checkpoint_every = 100
  return config
