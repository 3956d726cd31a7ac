"""DiGA on the synthetic pair at the tiny config's sizes (used by the tests): a source-only
student, the DiGA warm-up student from the same start, and one self-training round from it.

  python -m dakd_jax.main --config configs/diga_tiny.py --workdir /tmp/diga_tiny \
    --config.synthetic.enabled=True

The network is the tiny DRN-D-22 of `configs/tiny.py` (DiGA's ResNet-101 takes minutes per step on
a CPU); the method does not depend on the architecture.
"""

from configs import tiny
from dakd_jax import config as config_lib


def get_config():
  config = tiny.get_config()
  student = config.stages.student
  common = dict(source=student.source, target=student.target, batch_size=student.batch_size,
                num_steps=student.num_steps, optim=student.optim)
  config.stages.source_only = config_lib.stage_config(
      'source_only', 'student', row='Source only', **common)
  config.stages.diga_warmup = config_lib.stage_config(
      'diga_warmup', 'student', row='DiGA warm-up (distil + CrDoMix)', **common,
      translation='colour_stats',
      deviations="translation='colour_stats' stands in for the learned translator")
  config.stages.diga_selftrain = config_lib.stage_config(
      'diga_selftrain', 'student', row='DiGA self-training', **common,
      init='stage:diga_warmup', frozen={'labeler': 'stage:diga_warmup'},
      translation='colour_stats', feature_key='main_features',
      deviations="translation='colour_stats'; DRN's layer8 features stand in for the 256-d head "
      'features')
  config.pipeline = ('source_only', 'diga_warmup', 'diga_selftrain')
  return config
