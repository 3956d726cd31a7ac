"""MuHDi's continual sequence on the embedded synthetic data, on a CPU: GTA5-like source ->
Cityscapes-like target -> BDD-like target, 7 super-classes, MuHDi beside the ADVENT baseline.

  python -m dakd_jax.main --config configs/muhdi_synthetic.py --workdir runs/muhdi_synthetic

The stages are those of `configs/muhdi_gta2cs2idd2mapillary.py` with the synthetic domains, small
inputs and short schedules (the full-size DeepLab-v2 R101: each stage compiles for minutes on a
CPU). `continual.md` in the workdir has mIoU on both targets after each step and the forgetting
of the first target. `--config.seed=N` repeats it with another seed.
"""

from configs import muhdi_gta2cs2idd2mapillary as muhdi_config

SIZE = (64, 128)
WIDTH = 0.25  # The ResNet-101 body at a quarter of its channels: ~10x fewer FLOPs per step.
STEPS = {'advent_cs': 300, 'baseline_bdd': 150, 'muhdi_bdd': 150}


def get_config():
  config = muhdi_config.get_config()
  config.synthetic.enabled = True
  config.synthetic.bdd = True
  config.synthetic.size = (128, 256)
  config.synthetic.num_source = config.synthetic.num_target_train = 100
  config.synthetic.num_target_val = config.synthetic.num_bdd_val = 20
  config.synthetic.num_bdd_train = 100
  config.eval.also = ('bdd100k',)
  for network in (config.networks.deeplab, config.networks.muhdi):
    network.options.width = WIDTH
  config.eval.input_size = config.eval.label_size = SIZE
  stages = config.stages
  stages.baseline_bdd = stages.baseline_idd
  stages.muhdi_bdd = stages.muhdi_idd
  for name in ('baseline_idd', 'muhdi_idd', 'baseline_mapillary', 'muhdi_mapillary'):
    del stages[name]
  for name, stage in stages.items():
    stage.source.size = stage.target.size = SIZE
    stage.batch_size = 2
    stage.num_steps, stage.schedule_steps = STEPS[name], 0
    stage.optim.lr = 2.5e-3  # 10x the official rate: short runs.
    stage.deviations = 'synthetic domains, 64x128 inputs, short schedules, 10x learning rate'
  for name in ('baseline_bdd', 'muhdi_bdd'):
    stages[name].target.dataset = 'bdd100k'
    stages[name].row = stages[name].row.replace('IDD', 'BDD-like')
  config.pipeline = ('advent_cs', 'baseline_bdd', 'muhdi_bdd')
  config.train.log_every = 50
  config.train.checkpoint_every = 100
  return config
