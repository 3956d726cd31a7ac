"""DiGA on the embedded synthetic pair, on a CPU: source-only vs warm-up vs self-training from the
same source-pretrained start (the README's DiGA comparison).

  python -m dakd_jax.main --config configs/diga_demo.py --workdir runs/diga_demo

The student DRN-D-22 of `configs/demo.py`, at width 1/8, is pretrained on the labelled source
with the run's seed (the stand-in for ImageNet weights; the setting the README's DiGA table was
measured with), then trained for the same number of steps by source-only and by
the DiGA warm-up; two self-training rounds follow, as the official scripts run them, each from
the previous network with it as the labeler (offline pseudo-labels of the whole target training
split, centroids initialised by `calc_centroids.py`'s passes). CrDoMix uses
the colour-statistics stand-in for the translator (a deviation: no trained translator here).
"""

from configs import demo
from dakd_jax import config as config_lib

STEPS = {'source_only': 200, 'diga_warmup': 200, 'diga_selftrain': 100, 'diga_selftrain2': 100}


def get_config():
  config = demo.get_config()
  config.normalization = 'diga'  # DiGA's inputs; its strong augmentation expects about [-1, 1].
  config.networks.student.options.width = 0.125
  config.stages.pretrain_student.seed = -1
  stages = config.stages
  base = stages.source_only
  common = lambda name: dict(source=base.source, target=base.target, batch_size=base.batch_size,
                             num_steps=STEPS[name], optim=base.optim)
  stages.diga_warmup = config_lib.stage_config(
      'diga_warmup', 'student', row='DiGA warm-up (distil + CrDoMix)', **common('diga_warmup'),
      init='stage:pretrain_student', translation='colour_stats',
      deviations="translation='colour_stats'")
  for name, previous, round_ in (('diga_selftrain', 'diga_warmup', 1),
                                 ('diga_selftrain2', 'diga_selftrain', 2)):
    stages[name] = config_lib.stage_config(
        'diga_selftrain', 'student', row=f'DiGA self-training ({round_})', **common(name),
        init=f'stage:{previous}', frozen={'labeler': f'stage:{previous}'},
        translation='colour_stats', feature_key='main_features',
        deviations="translation='colour_stats'; DRN layer8 features for the centroids")
  config.pipeline = ('pretrain_student', 'source_only', 'diga_warmup', 'diga_selftrain',
                     'diga_selftrain2')
  return config
