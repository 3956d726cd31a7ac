"""GTA5 -> Cityscapes with DiGA (Shen et al., CVPR 2023; method.md §6): the distillation warm-up
with CrDoMix, then two rounds of self-training, each round's labeler the previous network.

  python -m dakd_jax.main --config configs/diga_gta2cs.py --workdir runs/diga_gta2cs \
    --config.roots.gta5=/data/GTA5 --config.roots.cityscapes=/data/cityscapes \
    --config.networks.diga.init=weights/diga_init \
    --config.translator=weights/diga_translator

`weights/diga_translator` comes from DiGA's released translator halves:
  python -m dakd_jax.tools.convert --model diga_translator --torch-checkpoint enc_s.pth \
    --decoder-checkpoint dec_s2t.pth --out weights/diga_translator
and `weights/diga_init` from a DiGA SegModel state dict (`--model diga_deeplabv2_r101`).

Official settings kept: SGD 2.5e-4 with the head at x10, momentum 0.9, weight decay 5e-4, poly 0.9,
80,000 steps per stage; inputs Caffe-normalised / 128; random rescale in [0.7, 1] per axis,
512x896 crops (source crops redrawn up to 5 times when uninformative), horizontal flips; loss
weights and EMA as `dakd_jax.methods.diga*`; 2-scale max-fusion evaluation at 1024x2048.
Deviations (also in each stage's `deviations`): one input size per stream (official: 1 image at
720x1280 plus 2 at full resolution per step, concatenated), the whole GTA5 list (official: 18,111
images of train_modified.txt),
the last checkpoint reported (official: best on val; `--config.eval.select=best_oracle
--config.eval.every=1000` reproduces that, labelled as an oracle).
"""

import ml_collections

from dakd_jax import config as config_lib

SIZE = (720, 1280)  # Streams resized to this before the random rescale and the crop.
CROP = (512, 896)
DEVIATIONS = 'one size per stream (official: 1 + 2 images at two sizes); full GTA5 list'


def stream(dataset, size=SIZE, rescale=True):
  """A DiGA stream: resized to `size`, rescaled by [0.7, 1] per axis (`rescale`), cropped to
  512x896, flipped; only the source loaders (GTA5, SYNTHIA) redraw uninformative crops."""
  cfg = config_lib.stream_config(dataset, size)
  if rescale:
    cfg.augment.random_scale = (0.7, 1.0)
    cfg.augment.per_axis_scale = True
  cfg.augment.crop = CROP
  cfg.augment.flip = True
  cfg.augment.crop_redraws = 0 if dataset == 'cityscapes' else 5
  return cfg


def get_config():
  config = config_lib.base_config()
  config.normalization = 'diga'
  config.networks.diga = config_lib.network_config('diga_deeplabv2_r101')
  # The converted translator (variables directory) every DiGA stage mixes with.
  config.translator = ml_collections.FieldReference('', field_type=str)
  config.eval.dataset = 'cityscapes'
  config.eval.input_size = (1024, 2048)
  config.eval.scales = (1.0, 0.5)  # 2-scale max fusion at full resolution (evaluate_val.py).
  common = lambda batch_size: dict(
      source=stream('gta5'), target=stream('cityscapes'), batch_size=batch_size,
      num_steps=80_000, optim=config_lib.optim_config(lr=2.5e-4, head_lr_mult=10.0))
  stages = config.stages
  stages.warmup = config_lib.stage_config(
      'diga_warmup', 'diga', row='DiGA warm-up (distil + CrDoMix)', **common(3),
      frozen={'translator': config.get_ref('translator')},
      reference='DiGA train_DiGA_gta2city_warm_up.py', deviations=DEVIATIONS)
  for name, previous in (('selftrain1', 'warmup'), ('selftrain2', 'selftrain1')):
    stages[name] = config_lib.stage_config(
        'diga_selftrain', 'diga', row=f'DiGA self-training ({name[-1]})', **common(3),
        init=f'stage:{previous}',
        frozen={'translator': config.get_ref('translator'), 'labeler': f'stage:{previous}'},
        reference='DiGA train_DiGA_gta2city_self_training.py',
        deviations=DEVIATIONS + '; pseudo-labels of the frozen labeler computed per crop; '
        'centroids from running means (start_mean) instead of calc_centroids.py')
  config.pipeline = ('warmup', 'selftrain1', 'selftrain2')
  config.train.checkpoint_every = 5_000
  config.train.log_every = 100
  return config
