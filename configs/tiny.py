"""Smallest shapes and steps: a smoke run of any stage in seconds of compute (used by the tests).

  python -m dakd_jax.main --config configs/tiny.py --workdir /tmp/tiny \
    --config.synthetic.enabled=True --config.pipeline=teacher,student,distill_c
"""

from configs import gta2cs

SIZE = (32, 64)


def get_config():
  config = gta2cs.get_config()
  config.pipeline = ('student',)
  config.synthetic.size = (64, 128)
  config.synthetic.num_source = 12
  config.synthetic.num_target_train = 12
  config.synthetic.num_target_val = 6
  config.eval.input_size = SIZE
  config.eval.num_grid_images = 2
  config.networks.student.options.width = 1 / 16
  config.networks.teacher.options.width = 1 / 16
  for stage in config.stages.values():
    stage.source.size = stage.target.size = SIZE
    stage.batch_size = 8  # Divisible by the 8 simulated CPU devices of the tests.
    stage.num_steps, stage.schedule_steps = 2, 0
    stage.optim.lr = 0.01
    adversarial = gta2cs.adversarial_options(stage)
    if adversarial is not None:
      adversarial.ndf = 4
  config.train.log_every = 2
  config.train.checkpoint_every = 2
  return config
