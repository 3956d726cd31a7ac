"""GTA5 -> Cityscapes, the paper's main scenario (Table 1 (II)), stage by stage as the official
scripts ran (method.md §4.4; `docs/stages.md` lists every stage's settings and differences).

The whole method from one command (source-only baseline, DRN-D-38 teacher DA, DRN-D-22 student DA,
distillation (a)-(d), evaluation table):

  python -m dakd_jax.main --config configs/gta2cs.py --workdir runs/gta2cs \
    --config.roots.gta5=/data/GTA5 --config.roots.cityscapes=/data/cityscapes \
    --config.networks.teacher.init=weights/drn_d_38 \
    --config.networks.student.init=weights/drn_d_22

where the `init` directories come from `python -m dakd_jax.tools.convert` on the ImageNet DRN
weights (fyu/drn). One stage: `--config.pipeline=distill_b` (its inputs must have run in the
workdir, or be given: `--config.stages.distill_b.frozen.teacher=DIR
--config.stages.distill_b.init=DIR`).
"""

from dakd_jax import config as config_lib

SRC_SIZE = (512, 1024)  # GTA5 resized to 1024x512 (W x H) in every DAKD script.
TGT_SIZE = (720, 1280)  # Cityscapes resized to 1280x720 (DAKD student and TS scripts).
TS_SCRIPT = 'DAKD train_gta2cs_ts_multi.py'
# decisions.md: the paper's method by default, the released behaviour one option away.
TS_DEFAULTS = ("student starts from its adapted weights (script: ImageNet, init=''); teacher BN "
               "in eval mode (script: teacher_bn='train'); KL as in the paper (script: "
               "kl_mode='legacy_zero' or 'modern_surrogate')")


def adversarial_options(stage):
  """The options node holding a stage's discriminator settings (`ndf`, `lambda_adv_*`), or None.

  DAKD stages nest their student's adaptation method under `options.adaptation`.
  """
  options = stage.options.adaptation if stage.method == 'dakd' else stage.options
  return options if 'ndf' in options else None


def get_config():
  config = config_lib.base_config()
  config.roots.gta5 = ''
  config.networks.teacher = config_lib.network_config('drn_d_38', aux_tap='layer7')
  config.networks.student = config_lib.network_config('drn_d_22', aux_tap='layer6')
  gta = lambda: config_lib.stream_config('gta5', SRC_SIZE)
  cityscapes = lambda size=TGT_SIZE: config_lib.stream_config('cityscapes', size)
  config.eval.dataset = 'cityscapes'
  config.eval.input_size = (512, 1024)  # Labels scored at full 1024x2048 (decisions.md).

  stages = config.stages
  stages.source_only = config_lib.stage_config(
      'source_only', 'student', row='Student, source only', source=gta(), target=cityscapes(),
      batch_size=3, num_steps=200_000, schedule_steps=250_000,
      reference='none (the paper has no source-only row); the student DA script without its '
      'adversarial terms')
  stages.teacher = config_lib.stage_config(
      'adaptsegnet', 'teacher', row='T: DRN-D-38 (DA)', source=gta(),
      target=cityscapes((512, 1024)), batch_size=5, num_steps=100_000,
      reference='DAKD train_gta2cs_multi_drn38.py',
      deviations="target 512x1024 (H x W): the script's '512,1024' parses as 512 wide, 1024 "
      'tall (portrait); set target.size=(1024, 512) to reproduce that')
  stages.student = config_lib.stage_config(
      'adaptsegnet', 'student', row='S: DRN-D-22 (DA)', source=gta(), target=cityscapes(),
      batch_size=3, num_steps=200_000, schedule_steps=250_000,
      reference='DAKD train_gta2cs_multi_drn22.py')
  for paradigm, row in (('a', '(a) source distill'), ('b', '(b) target distill'),
                        ('c', '(c) source+target'), ('d', '(d) target from (c)')):
    stages[f'distill_{paradigm}'] = config_lib.stage_config(
        'dakd', 'student', row=row, source=gta(), target=cityscapes(), batch_size=2,
        num_steps=50_000, init='stage:distill_c' if paradigm == 'd' else 'stage:student',
        frozen={'teacher': 'stage:teacher'}, paradigm=paradigm, reference=TS_SCRIPT,
        deviations={
            'a': f'the script with --target-distill 0; {TS_DEFAULTS}',
            'b': f'not expressible in the script (source terms off); {TS_DEFAULTS}',
            'c': TS_DEFAULTS,
            'd': f'not in the released code: (b) continued from the (c) student, same budget; '
                 f'{TS_DEFAULTS}',
        }[paradigm])
  config.pipeline = ('source_only', 'teacher', 'student', 'distill_a', 'distill_b', 'distill_c',
                     'distill_d')
  config.train.checkpoint_every = 5_000
  config.train.log_every = 100
  return config
