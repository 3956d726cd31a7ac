"""The README demo: the whole method on the embedded synthetic domain pair, on a CPU, in minutes.

  python -m dakd_jax.main --config configs/demo.py --workdir runs/demo

Generates the synthetic GTA5-like source and Cityscapes-like target (dakd_jax.data.synthetic)
under the workdir if absent, then runs every stage with width-scaled networks and prints the
results table. Networks start from random weights (no pretrained weights can be downloaded), so
the learning rate is higher than the official fine-tuning rate.
"""

from dakd_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.synthetic.enabled = True
  config.synthetic.size = (128, 256)
  config.source.size = (64, 128)  # Train at half the generated resolution: CPU minutes.
  config.target.size = (64, 128)
  config.eval.input_size = (64, 128)  # Labels are evaluated at the full 128x256.
  config.batch_size = 4
  config.teacher.options.width = 0.25  # DRN-D-38 at a quarter of the channels.
  config.student.options.width = 0.125  # DRN-D-22 at an eighth.
  config.discriminator.ndf = 16
  config.optim.lr = 0.02
  config.optim.d_lr = 1e-4
  config.adapt.lambda_adv_aux = 2e-3  # 10x the official weights: short runs from scratch.
  config.adapt.lambda_adv_main = 1e-2
  config.pipeline.adapt_steps = 300
  config.pipeline.distill_steps = 150
  config.pipeline.distill_d_steps = 150
  config.train.log_every = 50
  config.train.checkpoint_every = 150
  config.eval.num_grid_images = 4
  return config
