"""The configuration schema: every field of a dakd-jax run, its default, and start-up validation.

A run is a pipeline of *stages* (`config.stages.<name>`, run in the order of `config.pipeline`).
Each stage trains one network (`config.networks.<name>`) with one method (`dakd_jax.methods`) and
its own batch, image sizes, schedule, optimiser and inputs, so every official script's settings
can be written down as they ran; `configs/gta2cs.py` spells out the paper's stages. Run-level
fields (data roots, precision, logging, evaluation) are shared by every stage. Defaults follow
`decisions.md`: the paper's method done correctly, the released code's behaviours behind switches.
Sizes are `(height, width)`; batch sizes are global (all hosts together) per domain.
"""

import difflib
import os

import ml_collections

from dakd_jax import errors
from dakd_jax import methods
from dakd_jax.data.builders import BUILDERS
from dakd_jax.data.labels import LABEL_SETS

MODES = ('train', 'eval')
DTYPES = ('float32', 'bfloat16', 'float16')
NORMALIZATIONS = ('caffe', 'diga', 'imagenet')
BN_SYNC = ('global', 'per_device')
EVAL_SELECT = ('last', 'best_oracle')
STAGE_REF = 'stage:'  # `init`, `frozen.*` and `players` inputs taken from another stage.


def network_config(arch, init='', **options):
  """A segmentation network: registry name, constructor options and pretrained weights."""
  cfg = ml_collections.ConfigDict()
  cfg.arch = arch  # 'drn_d_22' | 'drn_d_38' | 'deeplabv2_r101' (dakd_jax.models).
  # Constructor options (width, aux_tap, aspp_branches, freeze_bn_affine, ...). The network's
  # own options decide its optimiser groups: heads, and BN affine frozen or not.
  cfg.options = ml_collections.ConfigDict(options)
  # Pretrained weights every stage training this network starts from unless it names its own
  # `init`: a variables directory (`python -m dakd_jax.tools.convert`, e.g. ImageNet DRN);
  # '' = random initialisation.
  cfg.init = init
  return cfg


def stream_config(dataset, size, split='train'):
  """One training input stream of a stage: a dataset split resized to `size` (H, W)."""
  cfg = ml_collections.ConfigDict()
  cfg.dataset = dataset  # A key of config.roots ('gta5' | 'cityscapes' | 'synthia' | ...).
  cfg.split = split
  cfg.size = tuple(size)  # Bicubic for images, nearest for labels (official: no crop).
  # Sizes cycled over a batch's images in place of `size` (DiGA: 1 image at 720x1280 and 2 at
  # full resolution), e.g. ((720, 1280), (1052, 1914), (1052, 1914)); () = `size` for all.
  # They need `augment.crop`, which gives the images one size again.
  cfg.sizes = ()
  cfg.augment = ml_collections.ConfigDict()
  cfg.augment.random_scale = ml_collections.FieldReference(None, field_type=tuple)  # (lo, hi).
  cfg.augment.crop = ml_collections.FieldReference(None, field_type=tuple)  # (H, W) crop.
  cfg.augment.flip = False  # Random horizontal flip (the official scripts use none).
  cfg.augment.per_axis_scale = False  # One rescale factor per axis (DiGA).
  cfg.augment.crop_redraws = 0  # Redraws of uninformative crops (DiGA's source loader: 5).
  return cfg


# Stage settings added after stage directories were first recorded (`stage_config.json`), with
# the value that reproduces what a run recorded without them did: such a directory resumes when
# the setting keeps that value.
ADDED_STAGE_SETTINGS = {
    'stage.optim.optimizer': 'sgd', 'stage.optim.betas': [0.9, 0.99],
    'stage.optim.d_optimizer': 'adam', 'stage.seed': -1,
    **{f'stage.{stream}.{key}': value for stream in ('source', 'target')
       for key, value in (('augment.per_axis_scale', False), ('augment.crop_redraws', 0),
                          ('sizes', []))},
    # DiGA's SYNTHIA settings (the GTA5 scripts' CE and augmentation probabilities).
    'stage.options.seg_loss': 'ce', 'stage.options.ohem_thresh': 0.7,
    'stage.options.ohem_min_kept': 100_000, 'stage.options.jitter_p': 0.5,
    'stage.options.gray_p': 0.3}


def optim_config(lr=2.5e-4, head_lr_mult=1.0, d_lr=1e-4, d_optimizer='adam', optimizer='sgd',
                 betas=(0.9, 0.99), weight_decay=5e-4):
  """A stage's optimisers: SGD for the network, Adam for the method's players (official values)."""
  cfg = ml_collections.ConfigDict()
  cfg.optimizer = optimizer  # The network's: 'sgd' | 'adam' (DiGA's translator).
  cfg.lr = lr  # Base learning rate, poly-decayed.
  cfg.momentum = 0.9  # SGD's.
  cfg.weight_decay = weight_decay  # Coupled into the gradient, as torch SGD and Adam do.
  cfg.power = 0.9  # Poly exponent of every schedule.
  cfg.head_lr_mult = head_lr_mult  # Heads' lr multiplier (10 for DeepLab-v2 in AdaptSegNet).
  cfg.d_lr = d_lr  # Discriminators' learning rate, poly-decayed.
  cfg.d_optimizer = d_optimizer  # Discriminators' optimiser: 'adam' | 'sgd' (SKD).
  cfg.betas = tuple(betas)  # (b1, b2) of every Adam of the stage (network and players).
  return cfg


def stage_config(method, network, *, row, source, target, batch_size, num_steps,
                 schedule_steps=0, optim=None, init='', frozen=None, seed=-1, reference='',
                 deviations='', **options):
  """One stage. `options` override the method's defaults (`methods.default_options`)."""
  cfg = ml_collections.ConfigDict()
  set_method(cfg, method, **options)
  cfg.network = network  # The trained network: a key of config.networks.
  cfg.batch_size = batch_size  # Global, per domain: source and target images per step.
  cfg.source = source  # stream_config(...) of the labelled source.
  cfg.target = target  # stream_config(...) of the unlabelled target (labels never read).
  cfg.num_steps = num_steps  # Updates run (the official early stop).
  cfg.schedule_steps = schedule_steps  # Poly horizon; 0 = num_steps.
  cfg.optim = optim or optim_config()
  # Inputs. A value 'stage:<name>' takes that stage's result (its export, or its `trained`
  # directory); anything else is a variables directory.
  cfg.init = init  # Network start; '' = config.networks.<network>.init.
  # Frozen networks the method needs, by role (DAKD: 'teacher').
  cfg.frozen = ml_collections.ConfigDict(frozen or {})
  cfg.players = ''  # The method's players (discriminators): '' = random, or a stage / directory.
  # A directory holding this stage's already trained network (e.g. a converted official
  # model): the stage is evaluated, not trained, and 'stage:<name>' refers to it.
  cfg.trained = ''
  # The stage's own seed (initialisation, state RNG, data order); -1 = the run's (config.seed).
  # A fixed seed trains the stage the same in every run seed: a stage standing in for released
  # weights (ImageNet, a published teacher), which real runs of any seed all start from.
  cfg.seed = seed
  cfg.row = row  # Its row in the results table.
  cfg.reference = reference  # The official script this stage reproduces.
  cfg.deviations = deviations  # Deliberate differences from that script.
  return cfg


def set_method(stage, method, **options):
  """Gives `stage` the method `method` with all its options: defaults updated by `options`.

  A config switching a stage to a method with other options calls this; on the command line
  `--config.stages.<name>.method` only switches between methods with the same options
  (adaptsegnet <-> advent).
  """
  stage.method = method  # A key of dakd_jax.methods.METHODS.
  # The method's options, all of them (their defaults are the official values).
  stage.options = ml_collections.ConfigDict(methods.default_options(method))
  stage.options.update(options)


def base_config():
  """Every run-level field, with no stages (configs/gta2cs.py adds the paper's)."""
  config = ml_collections.ConfigDict()
  config.mode = 'train'  # 'train': run the pipeline's stages; 'eval': eval.variables only.
  # Stages to run, in order (their inputs must be earlier here or already complete in the
  # workdir). On the command line: --config.pipeline=teacher,student.
  config.pipeline = ()
  config.stages = ml_collections.ConfigDict()  # name -> stage_config(...).
  config.networks = ml_collections.ConfigDict()  # name -> network_config(...).
  config.seed = 0  # Seeds initialisation and data order.
  # The label set (LABEL_SETS): 19 Cityscapes train classes; 7 = MuHDi's super-classes; 16 =
  # SYNTHIA's classes (every dataset scored in them, with the 13-class mIoU* as 'miou_13').
  config.num_classes = 19
  # Network input: 'caffe' (BGR minus mean, 0-255) | 'diga' (the same / 128) | 'imagenet'.
  config.normalization = 'caffe'

  # The official extracted dataset folders (datasets/<name>/README.md), by dataset name.
  config.roots = ml_collections.ConfigDict({name: '' for name in BUILDERS})
  config.data_dir = ''  # Where TFDS prepares array_record files; '' = <workdir>/tfds.
  # Training streams skip an image or label that does not decode (each named once in a warning,
  # counted in data/skipped_images, listed in <stage>/skipped_images.txt) instead of stopping
  # with its name. Evaluation never skips: its mIoU would silently be over another set.
  config.skip_unreadable_images = False
  # The embedded synthetic domain pair (dakd_jax.data.synthetic). When enabled, the pair is
  # generated under `out` ('' = <workdir>/synthetic) if absent, and empty roots point at it.
  config.synthetic = ml_collections.ConfigDict()
  config.synthetic.enabled = False
  config.synthetic.out = ''
  config.synthetic.seed = 0  # Same seed, same bytes.
  config.synthetic.size = (128, 256)  # (H, W) of the generated images.
  config.synthetic.num_source = 300
  config.synthetic.num_target_train = 300
  config.synthetic.num_target_val = 100
  config.synthetic.bdd = False  # Also a BDD100K-like second target (roots.bdd100k).
  config.synthetic.num_bdd_train = 100
  config.synthetic.num_bdd_val = 50

  # Evaluation of every stage's network on the target validation set.
  config.eval = ml_collections.ConfigDict()
  config.eval.dataset = 'cityscapes'
  config.eval.split = 'val'
  config.eval.input_size = (512, 1024)  # Network input (H, W).
  # Labels scored at this (H, W) (nearest resize); None = full resolution (1024x2048 for
  # Cityscapes, AdaptSegNet/ADVENT). DAKD's eval_cs.py scored at (512, 1024).
  config.eval.label_size = ml_collections.FieldReference(None, field_type=tuple)
  # Input scales whose logits are max-fused (DiGA's evaluation: (1.0, 0.5)).
  config.eval.scales = (1.0,)
  config.eval.batch_size = 1  # Global; padded up to a multiple of the device count.
  config.eval.num_images = -1  # -1 = the whole split.
  config.eval.save_predictions = True  # Train-id and colour PNGs under <stage>/eval/pred/.
  config.eval.num_grid_images = 4  # Rows of the picture grid (input, labels, predictions).
  # Reported network: 'last' (the final weights) or 'best_oracle' (also the best of the
  # evaluations every `eval.every` steps, selected *on the target validation labels* as ADVENT
  # and DiGA do; reported in its own row, labelled as an oracle).
  config.eval.select = 'last'
  config.eval.every = 0  # Steps between evaluations during training (for 'best_oracle').
  config.eval.variables = ''  # mode=eval: the variables directory to evaluate.
  # More datasets every stage is evaluated on, with the same split and sizes (continual
  # adaptation: every target seen so far); adds the per-domain table with forgetting.
  config.eval.also = ()

  # Run-time precision, memory and parallelism choices (they change no variable).
  config.compute_dtype = 'float32'  # 'bfloat16' on GPU/TPU: fp32 params, bf16 convolutions.
  config.frozen_dtype = ''  # Frozen networks' (teacher's) forward dtype; '' = compute_dtype.
  config.remat = False  # Recompute the trained network's blocks in the backward pass.
  # BatchNorm statistics in training: 'global' (over the global batch, synchronised BN) or
  # 'per_device' (each device's shard, as one PyTorch process per GPU computes them).
  config.bn_sync = 'global'

  # The training loop of every stage.
  config.train = ml_collections.ConfigDict()
  config.train.log_every = 50  # Steps between logged losses / learning rates.
  config.train.checkpoint_every = 1_000  # Steps between (asynchronous) checkpoints.
  config.train.max_to_keep = 3  # Checkpoints kept per stage.
  # A stage directory refuses a rerun with other settings; True lets a larger num_steps (and
  # nothing else) train on from the stage's last checkpoint, even a completed stage's.
  config.train.allow_longer = False
  # Batches transferred to the devices ahead of the step by a background thread (0 = transfer
  # in the loop). Checkpointed data positions count consumed batches only, so resume is exact.
  config.train.prefetch_to_device = 2
  return config


def pipeline_names(config):
  """`config.pipeline` as a list of stage names (comma-separated strings are split)."""
  value = config.pipeline
  items = [value] if isinstance(value, str) else list(value)
  return [name.strip() for item in items for name in item.split(',') if name.strip()]


def _require(condition, key, expected, value):
  if not condition:
    raise errors.UserError(f'config.{key}: expected {expected}, got {value!r}')


def check_size(key, size, optional=False):
  ok = (optional and size is None) or (
      isinstance(size, (tuple, list)) and len(size) == 2 and all(
          isinstance(v, int) and v > 0 for v in size))
  _require(ok, key, '(height, width) of positive ints' + (' or None' if optional else ''), size)


def check_one_of(key, value, valid):
  _require(value in valid, key, f'one of {valid}', value)


def check_root(dataset, root):
  _require(bool(root), f'roots.{dataset}', 'the path of the official dataset folder', root)
  _require(os.path.isdir(root), f'roots.{dataset}', 'an existing directory', root)


def validate(config):
  """Fails fast, with one line naming the key, on any invalid run-level field.

  Stages are checked by `dakd_jax.stages.plan`, which also needs the workdir.
  """
  check_one_of('mode', config.mode, MODES)
  check_one_of('normalization', config.normalization, NORMALIZATIONS)
  check_one_of('num_classes', config.num_classes, tuple(LABEL_SETS))
  check_one_of('compute_dtype', config.compute_dtype, DTYPES)
  check_one_of('frozen_dtype', config.frozen_dtype, ('',) + DTYPES)
  check_one_of('bn_sync', config.bn_sync, BN_SYNC)
  check_one_of('eval.select', config.eval.select, EVAL_SELECT)
  check_one_of('eval.dataset', config.eval.dataset, tuple(BUILDERS))
  for dataset in config.eval.also:
    check_one_of('eval.also', dataset, tuple(BUILDERS))
  _require(config.eval.every >= 0, 'eval.every', 'a non-negative int', config.eval.every)
  if config.eval.select == 'best_oracle':
    _require(config.eval.every > 0, 'eval.every',
             "a positive step interval (eval.select='best_oracle' compares evaluations)",
             config.eval.every)
  check_size('eval.input_size', config.eval.input_size)
  _require(len(config.eval.scales) > 0 and all(0 < s <= 1 for s in config.eval.scales),
           'eval.scales', 'a non-empty tuple of scales in (0, 1]', config.eval.scales)
  check_size('eval.label_size', config.eval.label_size, optional=True)
  _require(config.train.prefetch_to_device >= 0, 'train.prefetch_to_device',
           'a non-negative int', config.train.prefetch_to_device)
  for key in ('log_every', 'checkpoint_every'):
    _require(config.train[key] >= 1, f'train.{key}', 'a positive int', config.train[key])
  for name, root in config.roots.items():
    _require(name in BUILDERS, f'roots.{name}', f'a dataset of {tuple(BUILDERS)}', name)
    _require(not root or os.path.isdir(root), f'roots.{name}', 'an existing directory', root)
  for name, net in config.networks.items():
    _require(not net.init or os.path.isdir(net.init), f'networks.{name}.init',
             'a variables directory written by dakd_jax.tools.convert or a finished stage',
             net.init)
  if config.mode == 'eval':
    _require(os.path.isdir(config.eval.variables), 'eval.variables',
             'the variables directory to evaluate (mode=eval)', config.eval.variables)
  else:
    names = pipeline_names(config)
    _require(bool(names), 'pipeline', 'at least one stage name', config.pipeline)
    for name in names:
      _require(name in config.stages, 'pipeline', f'names of config.stages '
               f'({", ".join(config.stages)})', name)


def unknown_field(config, dotted):
  """None if `config.<dotted>` exists, else a one-line message with the closest valid names."""
  node, path = config, []
  for key in dotted.split('.'):
    if not isinstance(node, ml_collections.ConfigDict):
      return f'config.{".".join(path)} is a {type(node).__name__}, it has no field {key!r}'
    if key not in node:
      valid = sorted(node.keys())
      close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
      where = f'config.{".".join(path)}' if path else 'config'
      hint = f'did you mean {" or ".join(close)}? ' if close else ''
      return (f'config.{".".join(path + [key])}: no such field; {hint}{where} has: '
              f'{", ".join(valid)}')
    node, path = node[key], path + [key]
  return None
