"""GTA5 -> Cityscapes with DiGA (Shen et al., CVPR 2023; method.md §6): the image translator,
the distillation warm-up with CrDoMix, then two rounds of self-training, each round's labeler the
previous network.

  python -m dakd_jax.main --config configs/diga_gta2cs.py --workdir runs/diga_gta2cs \
    --config.roots.gta5=/data/GTA5 --config.roots.cityscapes=/data/cityscapes \
    --config.networks.diga.init=weights/diga_init --config.vgg19=weights/vgg19

trains the translator first (stage `translator`, `train_domain_translator.py`: Adam 1e-4 with
betas (0.5, 0.999), poly 0.9, 50,000 steps, 2 images per domain cropped to 512x896); every later
stage mixes with it (`config.translator`, 'stage:translator'). `weights/vgg19` is torchvision's
ImageNet VGG-19 for the perceptual term (not downloaded here):
  python -m dakd_jax.tools.convert --model vgg19_features --torch-checkpoint vgg19-dcbb9e9d.pth \
    --out weights/vgg19
(`--config.stages.translator.options.lambda_percep=0` trains without it, a deviation). To use
DiGA's released translator instead, skip the stage:
  python -m dakd_jax.tools.convert --model diga_translator --torch-checkpoint enc_s.pth \
    --decoder-checkpoint dec_s2t.pth --out weights/diga_translator
  ... --config.translator=weights/diga_translator --config.pipeline=warmup,selftrain1,selftrain2
`weights/diga_init` is where the official scripts start, DeepLab's ImageNet/COCO init (the
backbone; the head drawn fresh):
  python -m dakd_jax.tools.convert --model diga_deeplabv2_r101 \
    --torch-checkpoint DeepLab_resnet_pretrained_init-f81d91e8.pth --out weights/diga_init
(a DiGA SegModel state dict converts the same way).

Official settings kept: SGD 2.5e-4 with the head at x10, momentum 0.9, weight decay 5e-4, poly 0.9,
80,000 steps per stage; each step's images per domain at two sizes as the scripts' two loaders
give them (warm-up: 1 resized to 720x1280 / 512x1024 and 2 at full resolution, 1052x1914 /
1024x2048; self-training 2 + 1; translator 1 + 1; `Stream.sizes`; one shuffled stream where the
scripts draw the two sizes from two independently shuffled loaders); inputs Caffe-normalised /
128; random rescale in [0.7, 1] per axis,
512x896 crops (source crops redrawn up to 5 times when uninformative), horizontal flips; loss
weights and EMA as `dakd_jax.methods.diga*`; 2-scale max-fusion evaluation at 1024x2048. Each
self-training round first labels Cityscapes train at 1024x2048 with its labeler (2-scale max
fusion, `<stage>/pseudo_labels/`) and initialises its centroids by 5 passes at 512x1024 with the
network it starts from (`pseudolabel_generator.py`, `calc_centroids.py`).
Deviations (also in each stage's `deviations`): the whole GTA5 list (official: 18,111 images of
train_modified.txt, selected by an undocumented criterion), the last checkpoint reported
(official: best on val; `--config.eval.select=best_oracle
--config.eval.every=1000` reproduces that, labelled as an oracle).
"""

import ml_collections

from dakd_jax import config as config_lib

CROP = (512, 896)
# The scripts' two loaders per domain: images resized to `source/target_input_size` and images at
# full resolution (`*_input_size_full`), both then rescaled and cropped to 512x896.
LOW_SIZES = {'gta5': (720, 1280), 'cityscapes': (512, 1024)}
FULL_SIZES = {'gta5': (1052, 1914), 'cityscapes': (1024, 2048)}
DEVIATIONS = 'full GTA5 list (official: the 18,111 images of train_modified.txt)'
TRANSLATOR_DEVIATIONS = (
    'full GTA5 list; weight decay 5e-4 declared by the script but not given to Adam: none here '
    'either')


def sizes(dataset, num_low, num_full, low=None, full=None):
  """A batch's sizes: `num_low` images at the low size, then `num_full` at full resolution."""
  return ((low or LOW_SIZES[dataset]),) * num_low + ((full or FULL_SIZES[dataset]),) * num_full


def stream(dataset, batch_sizes, rescale=True):
  """A DiGA stream: its images resized to `batch_sizes` in turn (the first also being the
  stream's `size`), rescaled by [0.7, 1] per axis (`rescale`), cropped to 512x896, flipped; only
  the source loaders (GTA5, SYNTHIA) redraw uninformative crops."""
  cfg = config_lib.stream_config(dataset, batch_sizes[0])
  cfg.sizes = tuple(batch_sizes)
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
  config.networks.translator = config_lib.network_config('diga_cycle_translator')
  # The translator every DiGA stage mixes with: the translator stage's, or a converted one
  # (variables directory of DiGA's enc_s.pth + dec_s2t.pth).
  config.translator = ml_collections.FieldReference('stage:translator', field_type=str)
  # torchvision's VGG-19 converted (`--model vgg19_features`): the perceptual term's network.
  config.vgg19 = ml_collections.FieldReference('', field_type=str)
  config.eval.dataset = 'cityscapes'
  config.eval.input_size = (1024, 2048)
  config.eval.scales = (1.0, 0.5)  # 2-scale max fusion at full resolution (evaluate_val.py).
  # (low, full) images per domain: warm-up 1 + 2, self-training 2 + 1.
  common = lambda num_low, num_full: dict(
      source=stream('gta5', sizes('gta5', num_low, num_full)),
      target=stream('cityscapes', sizes('cityscapes', num_low, num_full)),
      batch_size=num_low + num_full, num_steps=80_000,
      optim=config_lib.optim_config(lr=2.5e-4, head_lr_mult=10.0))
  stages = config.stages
  stages.translator = config_lib.stage_config(
      'diga_translator', 'translator', row='DiGA image translator',
      source=stream('gta5', sizes('gta5', 1, 1), rescale=False),
      target=stream('cityscapes', sizes('cityscapes', 1, 1), rescale=False), batch_size=2,
      num_steps=50_000, optim=config_lib.optim_config(
          lr=1e-4, d_lr=1e-4, optimizer='adam', betas=(0.5, 0.999), weight_decay=0.0),
      frozen={'vgg': config.get_ref('vgg19')},
      reference='DiGA train_domain_translator.py', deviations=TRANSLATOR_DEVIATIONS)
  stages.warmup = config_lib.stage_config(
      'diga_warmup', 'diga', row='DiGA warm-up (distil + CrDoMix)', **common(1, 2),
      frozen={'translator': config.get_ref('translator')},
      reference='DiGA train_DiGA_gta2city_warm_up.py', deviations=DEVIATIONS)
  for name, previous in (('selftrain1', 'warmup'), ('selftrain2', 'selftrain1')):
    stages[name] = config_lib.stage_config(
        'diga_selftrain', 'diga', row=f'DiGA self-training ({name[-1]})', **common(2, 1),
        init=f'stage:{previous}',
        frozen={'translator': config.get_ref('translator'), 'labeler': f'stage:{previous}'},
        reference='DiGA train_DiGA_gta2city_self_training.py',
        deviations=DEVIATIONS)
  config.pipeline = ('translator', 'warmup', 'selftrain1', 'selftrain2')
  config.train.checkpoint_every = 5_000
  config.train.log_every = 100
  return config
