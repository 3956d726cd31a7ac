"""The README demo: the whole method on the embedded synthetic domain pair, on a CPU, in minutes.

  python -m dakd_jax.main --config configs/demo.py --workdir runs/demo

Generates the synthetic GTA5-like source and Cityscapes-like target (dakd_jax.data.synthetic)
under the workdir if absent, then runs every stage of `configs/gta2cs.py` with width-scaled
networks at small sizes and prints the results table. Networks start from random weights (no
pretrained weights can be downloaded), so the learning rate is higher than the official
fine-tuning rate.
"""

from configs import gta2cs

SIZE = (64, 128)  # Train at half the generated resolution: CPU minutes.


def get_config():
  config = gta2cs.get_config()
  config.synthetic.enabled = True
  config.synthetic.size = (128, 256)
  config.eval.input_size = SIZE  # Labels are evaluated at the full 128x256.
  config.networks.teacher.options.width = 0.25  # DRN-D-38 at a quarter of the channels.
  config.networks.student.options.width = 0.125  # DRN-D-22 at an eighth.
  for name, stage in config.stages.items():
    stage.source.size = stage.target.size = SIZE
    stage.batch_size = 4
    stage.num_steps = 150 if name.startswith('distill') else 300
    stage.schedule_steps = 0
    stage.optim.lr = 0.02
    adversarial = gta2cs.adversarial_options(stage)
    if adversarial is not None:
      adversarial.ndf = 16
      adversarial.lambda_adv_aux = 2e-3  # 10x the official weights: short runs from scratch.
      adversarial.lambda_adv_main = 1e-2
  config.train.log_every = 50
  config.train.checkpoint_every = 150
  config.eval.num_grid_images = 4
  return config
