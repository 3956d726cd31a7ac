"""GTA5 -> Cityscapes, the paper's main scenario (Table 1 (II)), as the official scripts run it.

The whole method from one command (source-only baseline, DRN-D-38 teacher DA, DRN-D-22 student DA,
distillation (a)-(d), evaluation table):

  python -m dakd_jax.main --config configs/gta2cs.py --workdir runs/gta2cs \
    --config.source.root=/data/GTA5 --config.target.root=/data/cityscapes \
    --config.teacher.init=weights/drn_d_38_imagenet --config.student.init=weights/drn_d_22_imagenet

where the `*.init` directories come from `python -m dakd_jax.convert` on the ImageNet DRN weights
(fyu/drn). One stage only: `--config.mode=distill --config.distill.paradigm=b
--config.distill.teacher=DIR --config.student.trained=DIR`.
"""

from dakd_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  # Official sizes (H, W): GTA5 resized to 512x1024, Cityscapes train to 720x1280 (DAKD TS script).
  config.source.size = (512, 1024)
  config.target.size = (720, 1280)
  config.eval.input_size = (512, 1024)  # Labels stay at 1024x2048 (decisions.md).
  config.batch_size = 2  # Per domain and step, as the DAKD distillation script.
  # Official schedule lengths: teacher script 100k; distillation 50k; (d)'s second phase is not in
  # the released code, we give it the same budget as the other paradigms.
  config.pipeline.adapt_steps = 100_000
  config.pipeline.distill_steps = 50_000
  config.pipeline.distill_d_steps = 50_000
  config.train.checkpoint_every = 5_000
  config.train.log_every = 100
  return config
