"""Model registry: `create_model(name, num_classes=19, **options)`, the optimiser groups a model
declares, and parameter counting."""

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from dakd_jax import errors
from dakd_jax.models.deeplab import DeepLabV2Multi
from dakd_jax.models.diga import DiGADeepLabV2
from dakd_jax.models.diga_translator import DiGACycleTranslator
from dakd_jax.models.diga_translator import DiGATranslator
from dakd_jax.models.discriminator import FCDiscriminator
from dakd_jax.models.drn import DRNSeg
from dakd_jax.models.image_discriminator import MultiScaleImageDiscriminator
from dakd_jax.models.muhdi import MuHDiDeepLab
from dakd_jax.models.pspnet import PSPNet
from dakd_jax.models.skd_discriminator import SKDDiscriminator
from dakd_jax.models.vgg import VGG19Features

# name -> (module class, constructor defaults; `arch` is fixed, the others are overridable).
_REGISTRY = {
    'drn_d_22': (DRNSeg, {'arch': 'drn_d_22', 'aux_tap': 'layer6'}),
    'drn_d_38': (DRNSeg, {'arch': 'drn_d_38', 'aux_tap': 'layer7'}),
    'deeplabv2_r101': (DeepLabV2Multi, {}),
    'muhdi_deeplabv2_r101': (MuHDiDeepLab, {}),
    'fc_discriminator': (FCDiscriminator, {}),
    'pspnet_r101': (PSPNet, {'arch': 'pspnet_r101'}),
    'pspnet_r18': (PSPNet, {'arch': 'pspnet_r18'}),
    'skd_discriminator': (SKDDiscriminator, {}),
    'diga_deeplabv2_r101': (DiGADeepLabV2, {}),
    'diga_translator': (DiGATranslator, {}),
    'diga_cycle_translator': (DiGACycleTranslator, {}),
    'multiscale_image_discriminator': (MultiScaleImageDiscriminator, {}),
    'vgg19_features': (VGG19Features, {}),
}
MODEL_NAMES = tuple(_REGISTRY)
# Models whose input is a `num_classes`-channel map rather than an image.
DISCRIMINATORS = ('fc_discriminator', 'skd_discriminator')
TRANSLATORS = ('diga_translator', 'diga_cycle_translator')  # Image-to-image networks.
# Networks on images that are neither segmentation networks nor translators: the translator
# stage's discriminator, the perceptual loss's feature extractor.
IMAGE_NETWORKS = ('multiscale_image_discriminator', 'vgg19_features')
SEGMENTATION_NETWORKS = tuple(n for n in MODEL_NAMES
                              if n not in DISCRIMINATORS + TRANSLATORS + IMAGE_NETWORKS)

# Labels of the segmentation optimiser's parameter groups (`parameter_groups`).
BODY, HEAD, FROZEN = 'body', 'head', 'frozen'


def model_options(name: str) -> tuple:
  """The option names `create_model(name, ...)` accepts besides `num_classes`."""
  if name not in _REGISTRY:
    raise errors.UserError(f'unknown model {name!r}; valid: {", ".join(MODEL_NAMES)}')
  reserved = {'parent', 'name', 'num_classes', 'arch'}
  return tuple(f.name for f in dataclasses.fields(_REGISTRY[name][0])
               if f.init and f.name not in reserved)


def create_model(name: str, num_classes: int = 19, **options: Any) -> nn.Module:
  """Builds a registered model.

  Names: 'drn_d_22' (aux tap layer6 by default), 'drn_d_38' (aux tap layer7 by default),
  'deeplabv2_r101', 'muhdi_deeplabv2_r101' (agnostic and specialist heads, stage outputs),
  'pspnet_r101', 'pspnet_r18' (SKD's teacher and student), 'diga_deeplabv2_r101' (DiGA's
  ResNet-101 + SE/GroupNorm head), 'diga_translator' (DiGA's image translator, variables under
  `encoder` and `decoder`), 'diga_cycle_translator' (the four halves its training stage trains),
  'multiscale_image_discriminator' (that stage's LSGAN discriminator), 'vgg19_features' (VGG-19
  up to relu5_1, the perceptual loss's frozen network), and the discriminators 'fc_discriminator', 'skd_discriminator' (whose
  input channels are `num_classes`). `dtype` may be
  a string ('bfloat16'). Unknown names or options raise a one-line ValueError.
  """
  valid = model_options(name)
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise errors.UserError(
        f'unknown option(s) {unknown} for model {name!r}; valid: {", ".join(valid)}')
  cls, defaults = _REGISTRY[name]
  kwargs = {**defaults, **options}
  if 'dtype' in kwargs:
    kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
  # Discriminators and the translator have no classes.
  if any(f.name == 'num_classes' for f in dataclasses.fields(cls)):
    kwargs['num_classes'] = num_classes
  return cls(**kwargs)


def input_channels(name: str, num_classes: int = 19) -> int:
  """Channels of the model's input: 3 (images) or `num_classes` (discriminator maps)."""
  return num_classes if name in DISCRIMINATORS else 3


def abstract_variables(name: str, num_classes: int = 19, **options: Any) -> Any:
  """`jax.eval_shape` of the model's variables (no compute, no memory) for counting/converting."""
  model = create_model(name, num_classes, **options)
  x = jax.ShapeDtypeStruct((1, 64, 64, input_channels(name, num_classes)), jnp.float32)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), x)


def count_params(variables_or_shapes: Mapping[str, Any]) -> int:
  """Number of trainable-style parameters (BN scale/bias included, running statistics not).

  Accepts variables or their `jax.eval_shape` structs; with a `{'params': ...}` collection dict
  only `params` is counted, any other tree is counted whole.
  """
  tree = variables_or_shapes
  if isinstance(tree, Mapping) and 'params' in tree:
    tree = tree['params']
  return sum(int(x.size) for x in jax.tree.leaves(tree))


def initialiser(name: str):
  """How model `name` starts from another network's variables, or None (same model only).

  A model class may declare `init_from_previous(previous, fresh) -> variables` (MuHDi: from a
  2-head or a 4-head DeepLab); it raises ValueError when `previous` does not fit.
  """
  model_options(name)  # Validates the name.
  return getattr(_REGISTRY[name][0], 'init_from_previous', None)


def head_modules(name: str) -> tuple[str, ...]:
  """Top-level parameter subtrees of model `name` that are classifier heads (`HEAD_MODULES`)."""
  model_options(name)  # Validates the name.
  return tuple(getattr(_REGISTRY[name][0], 'HEAD_MODULES', ()))


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


def parameter_groups(model: nn.Module, params: Any) -> Any:
  """Labels every leaf of `params` with its optimiser group: BODY, HEAD or FROZEN.

  The model's own declarations decide: leaves under its class's `HEAD_MODULES` are HEAD
  (AdaptSegNet-style x10 learning rate when the stage asks for it); with its
  `freeze_bn_affine` option the scale/bias of every normalisation layer of the body (a module
  owning a `scale` param outside the heads) are FROZEN (no update, no weight decay, as torch's
  requires_grad=False); the heads' normalisation layers (DiGA's GroupNorm) are trained.
  """
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  norm_modules = {names[:-1] for names in (_path_names(p) for p, _ in leaves)
                  if names[-1] == 'scale'}
  heads = set(getattr(model, 'HEAD_MODULES', ()))
  frozen_affine = bool(getattr(model, 'freeze_bn_affine', False))

  def label(path, _):
    names = _path_names(path)
    if (frozen_affine and names[0] not in heads and names[:-1] in norm_modules
        and names[-1] in ('scale', 'bias')):
      return FROZEN
    return HEAD if names[0] in heads else BODY

  return jax.tree_util.tree_map_with_path(label, params)
