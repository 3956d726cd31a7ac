"""SYNTHIA-RAND-CITYSCAPES -> Cityscapes with DiGA (Shen et al., CVPR 2023; method.md §6.3): the
stages of `configs/diga_gta2cs.py` with SYNTHIA as the source and a 16-class head.

  python -m dakd_jax.main --config configs/diga_synthia2cs.py --workdir runs/diga_synthia2cs \
    --config.roots.synthia=/data/RAND_CITYSCAPES --config.roots.cityscapes=/data/cityscapes \
    --config.networks.diga.init=weights/diga_init --config.vgg19=weights/vgg19

The `translator` stage trains the SYNTHIA -> Cityscapes translator as the official
`domain_adaptation/Synthia/train_domain_translator.py` does (SYNTHIA at 760x1280,
self-reconstruction weight 0.025 instead of GTA5's 0.001). A converted official SYNTHIA
translator (`enc_s.pth` + `dec_s2t.pth`, as in `diga_gta2cs.py`) replaces it with
`--config.translator=DIR --config.pipeline=warmup,selftrain1,selftrain2`.

The 16 classes are DiGA's (SYNTHIA ids 3,4,2,21,5,7,15,9,6,1,10,17,8,19,12,11 -> 0..15); the
Cityscapes labels are scored in them (terrain, truck and train ignored), and every evaluation
also reports the 13-class mIoU* (`miou_13`: the mean of the IoUs without wall, fence and pole).

Official settings that differ from GTA5 (`domain_adaptation/Synthia/train_DiGA_synthia2city_*`):
source images at SYNTHIA's own 760x1280; warm-up 60,000 steps, 4 source images per step (1 + 3),
lambda_distil 0.25, source crops without the random rescale; self-training 80,000 steps, 3 images
(1 + 2), rescale as for GTA5; every supervised term (the source CE, and self-training's mixed
target CE) is the OHEM CE (threshold 0.7, at least 100,000 pixels kept); the warm-up's strong
augmentation applies colour jitter with probability 0.7 and grayscale with 0.1 (self-training:
GTA5's 0.5 and 0.3). Everything else is `diga_gta2cs`'s.
Deviations (also in each stage's `deviations`): one input size per stream (official: 1 image at
760x1280 plus 3 (warm-up) / 2 (self-training) at 1140x1920); the warm-up learning rate is
poly-decayed. The official warm-up calls `poly_lr_scheduler_warm(base_lr, i_iter,
max_iter, power)` positionally into `(base_lr, iter, warmup, max_iter)`, so its rate rises linearly
from 0 to 2.5e-4 over the whole 60,000 steps.
"""

from configs import diga_gta2cs

SOURCE_SIZE = (760, 1280)  # SYNTHIA's own size (the official `source_input_size`).
NUM_CLASSES = 16
TRANSLATOR_LAMBDA_SELF = 0.025  # The SYNTHIA translator script's (GTA5: 0.001).
SHARED_DEVIATIONS = ('one size per stream (official: 1 + 3 or 1 + 2 images at 760x1280 and '
                     '1140x1920)')
WARMUP_DEVIATIONS = ('; poly lr (official: a linear ramp 0 -> 2.5e-4 over the stage, from a '
                     'positional-argument slip in adjust_learning_rate_warm)')
WARMUP_AUGMENT = {'jitter_p': 0.7, 'gray_p': 0.1}  # The SYNTHIA warm-up's `extra_aug`.


def get_config():
  config = diga_gta2cs.get_config()
  config.num_classes = NUM_CLASSES
  stages = config.stages
  translator = stages.translator
  translator.source = diga_gta2cs.stream('synthia', SOURCE_SIZE, rescale=False)
  translator.options.lambda_self = TRANSLATOR_LAMBDA_SELF
  translator.reference = 'DiGA domain_adaptation/Synthia/train_domain_translator.py'
  translator.deviations = (translator.deviations.replace('GTA5 720x1280', 'SYNTHIA 760x1280')
                           .replace('1052x1914', '1140x1920').replace('full GTA5 list; ', ''))
  warmup = stages.warmup
  warmup.source = diga_gta2cs.stream('synthia', SOURCE_SIZE, rescale=False)
  warmup.batch_size = 4
  warmup.num_steps = 60_000
  warmup.options.lambda_distil = 0.25
  warmup.options.update(WARMUP_AUGMENT)
  warmup.reference = 'DiGA domain_adaptation/Synthia/train_DiGA_synthia2city_warm_up.py'
  warmup.deviations = SHARED_DEVIATIONS + WARMUP_DEVIATIONS
  for name in ('warmup', 'selftrain1', 'selftrain2'):
    stages[name].options.seg_loss = 'ohem'
  for name in ('selftrain1', 'selftrain2'):
    stage = stages[name]
    stage.source = diga_gta2cs.stream('synthia', SOURCE_SIZE)
    stage.reference = 'DiGA domain_adaptation/Synthia/train_DiGA_synthia2city_self_training.py'
    stage.deviations = stage.deviations.replace(diga_gta2cs.DEVIATIONS, SHARED_DEVIATIONS)
  return config
