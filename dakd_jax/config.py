"""The configuration schema: every field of a dakd-jax run, its default, and start-up validation.

Experiment files in `configs/` call `base_config()` and override a few fields. Defaults follow
`decisions.md`: the paper's method done correctly, with the released code's behaviours behind
switches. Sizes are `(height, width)`; batch sizes are global (all hosts together) per domain.
"""

import os

import ml_collections

MODES = ('adapt', 'distill', 'eval', 'pipeline')
NETWORKS = ('teacher', 'student')
ADAPT_METHODS = ('adaptsegnet', 'advent', 'source_only')
PARADIGMS = ('a', 'b', 'c', 'd')
KL_MODES = ('paper', 'legacy_zero', 'modern_surrogate')
MSE_TARGETS = ('aux_logprobs', 'features')
DTYPES = ('float32', 'bfloat16', 'float16')
DATASETS = ('gta5', 'cityscapes', 'bdd100k')
STAGES = ('source_only', 'teacher', 'student', 'distill_a', 'distill_b', 'distill_c',
          'distill_d')


def domain_config(dataset, size, split='train', root=''):
  """One input stream: an official dataset folder, resized to `size` (H, W)."""
  cfg = ml_collections.ConfigDict()
  cfg.dataset = dataset  # 'gta5' | 'cityscapes' | 'bdd100k'.
  cfg.root = root  # The official extracted folder (see datasets/<name>/README.md).
  cfg.split = split  # Split of the TFDS builder ('train' | 'val').
  cfg.size = size  # (H, W) every image is resized to (bicubic; labels nearest).
  cfg.normalization = 'caffe'  # 'caffe': BGR minus mean in 0-255 (official); 'imagenet'.
  cfg.augment = ml_collections.ConfigDict()
  cfg.augment.random_scale = ml_collections.FieldReference(None, field_type=tuple)  # (lo, hi).
  cfg.augment.crop = ml_collections.FieldReference(None, field_type=tuple)  # (H, W) crop.
  cfg.augment.flip = False  # Random horizontal flip (the official scripts use none).
  return cfg


def network_config(arch, **options):
  """A segmentation network: registry name, constructor options and initial weights."""
  cfg = ml_collections.ConfigDict()
  cfg.arch = arch  # 'drn_d_22' | 'drn_d_38' | 'deeplabv2_r101'.
  cfg.options = ml_collections.ConfigDict(options)  # Passed to models.create_model.
  # Initial weights for its adaptation stage: a variables directory written by
  # `python -m dakd_jax.convert` (e.g. ImageNet DRN weights) or by a finished stage; '' = random.
  cfg.init = ''
  # An already trained (e.g. converted official) network: the pipeline then skips training it.
  cfg.trained = ''
  return cfg


def base_config():
  """All fields with the GTA5 -> Cityscapes defaults of the paper and the official code."""
  config = ml_collections.ConfigDict()
  config.mode = 'pipeline'  # 'adapt' | 'distill' | 'eval' | 'pipeline' (every stage in order).
  config.seed = 0  # Seeds initialisation and data order.
  config.num_classes = 19  # Cityscapes train classes.
  config.data_dir = ''  # Where TFDS prepares array_record files; '' = <workdir>/tfds.

  # The embedded synthetic domain pair (dakd_jax.data.synthetic). When enabled, the pair is
  # generated under `out` ('' = <workdir>/synthetic) if absent, and empty dataset roots point at it.
  config.synthetic = ml_collections.ConfigDict()
  config.synthetic.enabled = False
  config.synthetic.out = ''
  config.synthetic.seed = 0  # Same seed, same bytes.
  config.synthetic.size = (128, 256)  # (H, W) of the generated images.
  config.synthetic.num_source = 300
  config.synthetic.num_target_train = 300
  config.synthetic.num_target_val = 100

  # Input streams (labelled source, unlabelled target) and the evaluation set.
  config.source = domain_config('gta5', (512, 1024))
  config.target = domain_config('cityscapes', (720, 1280))
  config.batch_size = 2  # Global batch per domain: 2 source + 2 target images per step.
  config.eval = ml_collections.ConfigDict()
  config.eval.dataset = config.target.get_ref('dataset')  # Target validation set.
  config.eval.root = config.target.get_ref('root')
  config.eval.split = 'val'
  config.eval.input_size = (512, 1024)  # Network input (H, W); labels stay at full resolution.
  config.eval.normalization = config.target.get_ref('normalization')
  config.eval.batch_size = 1  # Global; padded up to a multiple of the device count.
  config.eval.num_images = -1  # -1 = the whole split.
  config.eval.save_predictions = True  # Train-id and colour PNGs under <dir>/eval/pred/.
  config.eval.num_grid_images = 4  # Rows of the picture grid (input, labels, predictions).

  # Networks. `network` picks which one `mode=adapt|eval` trains or evaluates.
  config.network = 'student'  # 'teacher' | 'student'.
  config.teacher = network_config('drn_d_38', aux_tap='layer7')
  config.student = network_config('drn_d_22', aux_tap='layer6')
  config.discriminator = ml_collections.ConfigDict()
  config.discriminator.ndf = 64  # Width of the first conv; 64 is the official value.
  config.compute_dtype = 'float32'  # 'bfloat16' on GPU/TPU: fp32 params, bf16 convolutions.
  # Recompute each residual block / conv stack of the trained network in the backward pass
  # instead of storing its activations: less memory (larger batches), more forward compute.
  config.remat = False

  # Adaptation (AdaptSegNet multi-level output-space adversarial; ADVENT variant).
  config.adapt = ml_collections.ConfigDict()
  config.adapt.method = 'adaptsegnet'  # 'adaptsegnet' | 'advent' | 'source_only'.
  config.adapt.gan = 'bce'  # 'bce' (vanilla GAN) | 'lsgan'.
  config.adapt.lambda_seg_aux = 0.1  # Weight of the auxiliary-head segmentation loss.
  config.adapt.lambda_adv_aux = 2e-4  # Adversarial weight at the auxiliary ("feature") level.
  config.adapt.lambda_adv_main = 1e-3  # Adversarial weight at the output level.

  # Distillation (DAKD).
  config.distill = ml_collections.ConfigDict()
  config.distill.paradigm = 'c'  # (a) source, (b) target, (c) both, (d) target from (c).
  config.distill.gamma = 1.0  # Target distillation weights = gamma x source weights.
  config.distill.lambda_kl = 0.1  # Output-level KL weight.
  config.distill.kl_aux_factor = 0.1  # Feature-level KL weight = lambda_kl x this.
  config.distill.kl_mode = 'paper'  # 'paper' | 'legacy_zero' | 'modern_surrogate' (released code).
  config.distill.lambda_mse = 0.01  # MSE weight at the feature level.
  config.distill.mse_on = 'aux_logprobs'  # 'aux_logprobs' (code) | 'features' (paper).
  config.distill.lambda_ce = 1.0  # Teacher pseudo-label cross-entropy weight.
  config.distill.pseudo_label_threshold = 0.0  # Ignore pixels under this teacher confidence.
  config.distill.teacher_bn = 'eval'  # 'eval' (running statistics) | 'train' (released code).
  # Compute dtype of the frozen teacher's forward ('' = compute_dtype): the teacher is never
  # differentiated, so it may run in inference precision ('bfloat16') under an fp32 student.
  config.distill.teacher_dtype = ''
  # Variables directory of the frozen teacher; '' = the pipeline's teacher stage.
  config.distill.teacher = ''
  # Student start: a variables directory, 'adapted' (its own DA stage, default), or 'init'
  # (student.init, e.g. ImageNet weights as the released code does).
  config.distill.student_init = 'adapted'

  # Optimisation (official values; single parameter group as DAKD's scripts).
  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 2.5e-4  # SGD base learning rate, poly-decayed.
  config.optim.momentum = 0.9
  config.optim.weight_decay = 5e-4  # Coupled into the gradient, as torch SGD does.
  config.optim.power = 0.9  # Poly exponent.
  config.optim.head_lr_mult = 1.0  # 10 for DeepLab classifiers (AdaptSegNet/ADVENT).
  config.optim.freeze_bn_affine = False  # True for DeepLab: BN scale/bias frozen.
  config.optim.d_lr = 1e-4  # Discriminator Adam learning rate, poly-decayed.

  # The training loop of one stage.
  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 50_000  # Length of the poly schedule and of the run.
  config.train.log_every = 50  # Steps between logged losses / learning rates.
  config.train.checkpoint_every = 1_000  # Steps between (asynchronous) checkpoints.
  config.train.max_to_keep = 3  # Checkpoints kept per stage.
  # Batches transferred to the devices ahead of the step by a background thread (0 = transfer
  # in the loop). Checkpointed data positions count consumed batches only, so resume is exact.
  config.train.prefetch_to_device = 2

  # The whole method (mode=pipeline): stages and their lengths.
  config.pipeline = ml_collections.ConfigDict()
  config.pipeline.stages = STAGES  # Subset/order of STAGES to run.
  config.pipeline.adapt_steps = 100_000  # source_only / teacher / student stages.
  config.pipeline.distill_steps = 50_000  # distill_a..c.
  config.pipeline.distill_d_steps = 50_000  # Second phase of (d), from (c)'s student.
  return config


def _require(condition, key, expected, value):
  if not condition:
    raise ValueError(f'config.{key}: expected {expected}, got {value!r}')


def _check_size(key, size):
  ok = isinstance(size, (tuple, list)) and len(size) == 2 and all(
      isinstance(v, int) and v > 0 for v in size)
  _require(ok, key, '(height, width) of positive ints', size)


def _check_dataset_root(key, dataset, root, needed):
  _require(dataset in DATASETS, f'{key}.dataset', f'one of {DATASETS}', dataset)
  if needed:
    _require(bool(root), f'{key}.root', 'the path of the official dataset folder', root)
    _require(os.path.isdir(root), f'{key}.root', 'an existing directory', root)


def validate(config):
  """Fails fast, with one line naming the key, on any invalid field."""
  _require(config.mode in MODES, 'mode', f'one of {MODES}', config.mode)
  _require(config.network in NETWORKS, 'network', f'one of {NETWORKS}', config.network)
  _require(config.adapt.method in ADAPT_METHODS, 'adapt.method', f'one of {ADAPT_METHODS}',
           config.adapt.method)
  _require(config.adapt.gan in ('bce', 'lsgan'), 'adapt.gan', "'bce' or 'lsgan'", config.adapt.gan)
  d = config.distill
  _require(d.paradigm in PARADIGMS, 'distill.paradigm', f'one of {PARADIGMS}', d.paradigm)
  _require(d.kl_mode in KL_MODES, 'distill.kl_mode', f'one of {KL_MODES}', d.kl_mode)
  _require(d.mse_on in MSE_TARGETS, 'distill.mse_on', f'one of {MSE_TARGETS}', d.mse_on)
  _require(d.teacher_bn in ('eval', 'train'), 'distill.teacher_bn', "'eval' or 'train'",
           d.teacher_bn)
  _require(d.gamma >= 0, 'distill.gamma', 'a non-negative number', d.gamma)
  _require(0 <= d.pseudo_label_threshold < 1, 'distill.pseudo_label_threshold', 'in [0, 1)',
           d.pseudo_label_threshold)
  _require(config.compute_dtype in DTYPES, 'compute_dtype', f'one of {DTYPES}',
           config.compute_dtype)
  _require(d.teacher_dtype in ('',) + DTYPES, 'distill.teacher_dtype',
           f"'' (= compute_dtype) or one of {DTYPES}", d.teacher_dtype)
  _require(config.train.prefetch_to_device >= 0, 'train.prefetch_to_device',
           'a non-negative int', config.train.prefetch_to_device)
  _require(config.batch_size >= 1, 'batch_size', 'a positive int', config.batch_size)
  _require(config.train.num_steps >= 1, 'train.num_steps', 'a positive int',
           config.train.num_steps)
  for stage in config.pipeline.stages:
    _require(stage in STAGES, 'pipeline.stages', f'a subset of {STAGES}', stage)
  _check_size('source.size', config.source.size)
  _check_size('target.size', config.target.size)
  _check_size('eval.input_size', config.eval.input_size)
  for key in ('source', 'target'):
    value = config[key].normalization
    _require(value in ('caffe', 'imagenet'), f'{key}.normalization', "'caffe' or 'imagenet'",
             value)
  trains = config.mode in ('adapt', 'distill', 'pipeline')
  _check_dataset_root('source', config.source.dataset, config.source.root, trains)
  _check_dataset_root('target', config.target.dataset, config.target.root, trains)
  _check_dataset_root('eval', config.eval.dataset, config.eval.root, True)
  for name in NETWORKS:
    for field in ('init', 'trained'):
      path = config[name][field]
      _require(not path or os.path.isdir(path), f'{name}.{field}',
               'a variables directory written by dakd_jax.convert or a finished stage', path)
  if d.teacher:
    _require(os.path.isdir(d.teacher), 'distill.teacher', 'a variables directory', d.teacher)
  if config.mode == 'distill':
    _require(bool(d.teacher), 'distill.teacher', 'the teacher variables directory (mode=distill)',
             d.teacher)
    if d.student_init == 'adapted':
      _require(bool(config.student.trained), 'student.trained',
               "the adapted student's variables directory (mode=distill, student_init='adapted')",
               config.student.trained)
  if d.student_init not in ('adapted', 'init'):
    _require(os.path.isdir(d.student_init), 'distill.student_init',
             "'adapted', 'init' or a variables directory", d.student_init)
