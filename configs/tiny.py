"""Smallest shapes and steps: a smoke run of any mode in seconds of compute (used by the tests).

  python -m dakd_jax.main --config configs/tiny.py --workdir /tmp/tiny \
    --config.synthetic.enabled=True --config.mode=pipeline
"""

from dakd_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.mode = 'adapt'
  config.synthetic.size = (64, 128)
  config.synthetic.num_source = 12
  config.synthetic.num_target_train = 12
  config.synthetic.num_target_val = 6
  config.source.size = config.target.size = (32, 64)
  config.eval.input_size = (32, 64)
  config.batch_size = 8  # Divisible by the 8 simulated CPU devices of the tests.
  config.student.options.width = 1 / 16
  config.teacher.options.width = 1 / 16
  config.discriminator.ndf = 4
  config.optim.lr = 0.01
  config.train.num_steps = 6
  config.train.log_every = 2
  config.train.checkpoint_every = 2
  config.eval.num_grid_images = 2
  config.pipeline.adapt_steps = 2
  config.pipeline.distill_steps = 2
  config.pipeline.distill_d_steps = 2
  return config
