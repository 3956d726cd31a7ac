"""DiGA on the synthetic pair at the tiny config's sizes (used by the tests): a source-only
student, the DiGA warm-up student from the same start, and one self-training round from it; and
`translator`, DiGA's translator stage at width 8 on 64x64 crops (the multi-scale discriminator's
coarsest scale needs 64 pixels), without the perceptual term (no VGG weights here):

  python -m dakd_jax.main --config configs/diga_tiny.py --workdir /tmp/diga_tiny \
    --config.synthetic.enabled=True --config.pipeline=translator

  python -m dakd_jax.main --config configs/diga_tiny.py --workdir /tmp/diga_tiny \
    --config.synthetic.enabled=True

The network is the tiny DRN-D-22 of `configs/tiny.py` (DiGA's ResNet-101 takes minutes per step on
a CPU); the method does not depend on the architecture.
"""

from configs import tiny
from dakd_jax import config as config_lib

TRANSLATOR_CROP = (64, 64)


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
  config.networks.translator = config_lib.network_config('diga_cycle_translator', width=8)
  translator_stream = lambda dataset: config_lib.stream_config(dataset, config.synthetic.size)
  config.stages.translator = config_lib.stage_config(
      'diga_translator', 'translator', row='DiGA image translator',
      source=translator_stream('gta5'), target=translator_stream('cityscapes'),
      batch_size=student.batch_size, num_steps=student.num_steps,
      optim=config_lib.optim_config(lr=1e-3, d_lr=1e-3, optimizer='adam', betas=(0.5, 0.999),
                                    weight_decay=0.0),
      lambda_percep=0.0, d_width=8, deviations='width 8 (official 64); no perceptual term')
  for stream in (config.stages.translator.source, config.stages.translator.target):
    stream.augment.crop = TRANSLATOR_CROP
    stream.augment.flip = True
  config.pipeline = ('source_only', 'diga_warmup', 'diga_selftrain')
  return config
