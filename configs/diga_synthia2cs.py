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
source images at SYNTHIA's own 760x1280 and at 1140x1920; warm-up 60,000 steps, 4 images per step
and domain (1 + 3 at the two sizes; Cityscapes at 512x1024 and 1024x2048), lambda_distil 0.25,
source crops without the random rescale; self-training 80,000 steps, 3 images (1 + 2), rescale as
for GTA5; every supervised term (the source CE, and self-training's mixed
target CE) is the OHEM CE (threshold 0.7, at least 100,000 pixels kept); the warm-up's strong
augmentation applies colour jitter with probability 0.7 and grayscale with 0.1 (self-training:
GTA5's 0.5 and 0.3). Everything else is `diga_gta2cs`'s.
Deviation (also in the stage's `deviations`): the warm-up learning rate is poly-decayed. The
official warm-up calls `poly_lr_scheduler_warm(base_lr, i_iter,
max_iter, power)` positionally into `(base_lr, iter, warmup, max_iter)`, so its rate rises linearly
from 0 to 2.5e-4 over the whole 60,000 steps.
"""

from configs import diga_gta2cs

SOURCE_SIZE = (760, 1280)  # SYNTHIA's own size (the official `source_input_size`).
SOURCE_FULL_SIZE = (1140, 1920)  # Its `source_input_size_full` (upsampled x1.5).
NUM_CLASSES = 16
TRANSLATOR_LAMBDA_SELF = 0.025  # The SYNTHIA translator script's (GTA5: 0.001).
WARMUP_DEVIATIONS = ('poly lr (official: a linear ramp 0 -> 2.5e-4 over the stage, from a '
                     'positional-argument slip in adjust_learning_rate_warm)')
WARMUP_AUGMENT = {'jitter_p': 0.7, 'gray_p': 0.1}  # The SYNTHIA warm-up's `extra_aug`.


def source_sizes(num_low, num_full):
  return diga_gta2cs.sizes('synthia', num_low, num_full, SOURCE_SIZE, SOURCE_FULL_SIZE)


def get_config():
  config = diga_gta2cs.get_config()
  config.num_classes = NUM_CLASSES
  stages = config.stages
  translator = stages.translator
  translator.source = diga_gta2cs.stream('synthia', source_sizes(1, 1), rescale=False)
  translator.options.lambda_self = TRANSLATOR_LAMBDA_SELF
  translator.reference = 'DiGA domain_adaptation/Synthia/train_domain_translator.py'
  translator.deviations = translator.deviations.replace('full GTA5 list; ', '')
  warmup = stages.warmup
  warmup.source = diga_gta2cs.stream('synthia', source_sizes(1, 3), rescale=False)
  warmup.target = diga_gta2cs.stream('cityscapes', diga_gta2cs.sizes('cityscapes', 1, 3))
  warmup.batch_size = 4
  warmup.num_steps = 60_000
  warmup.options.lambda_distil = 0.25
  warmup.options.update(WARMUP_AUGMENT)
  warmup.reference = 'DiGA domain_adaptation/Synthia/train_DiGA_synthia2city_warm_up.py'
  warmup.deviations = WARMUP_DEVIATIONS
  for name in ('warmup', 'selftrain1', 'selftrain2'):
    stages[name].options.seg_loss = 'ohem'
  for name in ('selftrain1', 'selftrain2'):
    stage = stages[name]
    stage.source = diga_gta2cs.stream('synthia', source_sizes(1, 2))
    stage.target = diga_gta2cs.stream('cityscapes', diga_gta2cs.sizes('cityscapes', 1, 2))
    stage.reference = 'DiGA domain_adaptation/Synthia/train_DiGA_synthia2city_self_training.py'
    stage.deviations = ''  # GTA5's subset list does not apply.
  return config
