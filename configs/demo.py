"""The README demo: the whole method on the embedded synthetic domain pair, on a CPU, in minutes.

  python -m dakd_jax.main --config configs/demo.py --workdir runs/demo

Generates the synthetic GTA5-like source and Cityscapes-like target (dakd_jax.data.synthetic)
under the workdir if absent, then runs the stages of `configs/gta2cs.py` with width-scaled networks
at half the generated resolution, and prints the results table.

Every official network starts from ImageNet weights, which cannot be downloaded here; two extra
stages stand in for them: `pretrain_teacher` and `pretrain_student` train each architecture on the
labelled source, and every later stage starts from their result exactly as the official stages
start from ImageNet weights (`stages.<name>.init`). Like released weights, they are the same for
every run seed (`stages.<name>.seed = 0`): `--config.seed` varies the stages after them, as a seed
varies a real run. The source-only baseline and the adapted networks then get the same budget from
the same start.
"""

from dakd_jax import config as config_lib
from configs import gta2cs

SIZE = (64, 128)  # Train at half the generated resolution: CPU minutes.
# Steps per stage, from the sweep in docs/demo.md. The deeper teacher is pretrained longer, as its
# ImageNet initialisation is the stronger one (DRN-D-38 77.0 vs DRN-D-22 74.1 top-1).
STEPS = {'pretrain_teacher': 700, 'pretrain_student': 400, 'source_only': 200, 'teacher': 200,
         'student': 200, 'distill_a': 100, 'distill_b': 100, 'distill_c': 100, 'distill_d': 100}
LR = {'pretrain_teacher': 0.05, 'pretrain_student': 0.05}  # Others: 0.02 (80x the official).


def get_config():
  config = gta2cs.get_config()
  config.synthetic.enabled = True
  config.synthetic.size = (128, 256)
  config.eval.input_size = SIZE  # Labels are evaluated at the full 128x256.
  config.networks.teacher.options.width = 0.25  # DRN-D-38 at a quarter of the channels.
  # DRN-D-22 at 3/32 of its channels: 0.14M parameters against the teacher's 1.63M, so that the
  # teacher is clearly the stronger network (the width sweep in docs/demo.md).
  config.networks.student.options.width = 0.09375
  stages = config.stages
  for network in ('teacher', 'student'):
    stages[f'pretrain_{network}'] = config_lib.stage_config(
        'source_only', network, row=f'{network} init: source pretraining',
        source=config_lib.stream_config('gta5', SIZE),
        target=config_lib.stream_config('cityscapes', SIZE), batch_size=4,
        num_steps=STEPS[f'pretrain_{network}'], seed=0,
        reference='none: stands in for the ImageNet weights of the official networks')
    stages[network].init = f'stage:pretrain_{network}'
  stages.source_only.init = 'stage:pretrain_student'
  for name, stage in stages.items():
    stage.source.size = stage.target.size = SIZE
    stage.batch_size = 4
    stage.num_steps = STEPS[name]
    stage.schedule_steps = 0
    stage.optim.lr = LR.get(name, 0.02)
    adversarial = gta2cs.adversarial_options(stage)
    if adversarial is not None:
      adversarial.ndf = 16
      adversarial.lambda_adv_aux = 2e-3  # 10x the official weights: short runs.
      adversarial.lambda_adv_main = 1e-2
  config.pipeline = ('pretrain_teacher', 'pretrain_student') + tuple(config.pipeline)
  config.train.log_every = 50
  config.train.checkpoint_every = 100
  config.eval.num_grid_images = 4
  return config
