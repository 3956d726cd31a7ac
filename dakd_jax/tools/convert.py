"""PyTorch state_dict -> Flax variables for every registered model, and the conversion CLI.

Accepted key sets (a `module.` prefix and a checkpoint dict wrapping the state dict under
'state_dict' or 'model' are tolerated; `num_batches_tracked` is always ignored):
- DAKD DRN segmentation nets: `base.layer*` backbone, `seg1` (main head), `seg2` (aux head),
  unused `up1`/`up2` transposed convs (dropped).
- fyu/drn ImageNet classifiers: the same backbone keys without `base.`, `fc` (dropped); both
  heads are initialised fresh from `seed`.
- AdaptSegNet/ADVENT DeepLab-v2 multi: `conv1`, `bn1`, `layer1..4`, `layer5` (aux) and `layer6`
  (main) `conv2d_list.{0..3}`; ADVENT's checkpoints have the same keys (four live branches).
- MuHDi's 4-head DeepLab-v2: the same plus `layer7` (aux) and `layer8` (main) specialist heads.
- FCDiscriminator: `conv1..conv4`, `classifier`.
- SKD PSPNets (`pspnet_r101`, `pspnet_r18`): `conv1..3`/`bn1..3`, `layer1..4`,
  `pspmodule.stages.{i}.{1,2}`, `pspmodule.bottleneck.{0,1}`, `head`, `dsn.{0,1,3}`; InPlace-ABN
  entries (`weight`, `bias`, `running_mean`, `running_var`) are BatchNorm's. The released teacher
  names the PSP module `head.0.*` and the classifier `head.1.*` (recognised by its `head.0.` keys);
  an ImageNet `fc` is dropped.
- SKD holistic discriminator: `preprocess_additional` (BatchNorm), `l1..l4.0.module.{weight_bar,
  bias, weight_u, weight_v}` (the SAGAN spectral-norm wrapper; `torch.nn.utils.spectral_norm`'s
  `l1..l4.0.{weight_orig, bias, weight_u, weight_v}` too), `attn1`/`attn2`, `last.0`. The
  power-iteration vectors go to the `spectral` collection.
- DiGA's SegModel: `layer0.{0,1}` (stem conv and BN), `layer1..4`, `final` (ProDA head:
  `conv2d_list.{0..4}.{0,1}`, `bottleneck.0.se.{0,2}`, `bottleneck.{1,2}`, `head.1`).
- DeepLab's ImageNet/COCO init (`DeepLab_resnet_pretrained_init-f81d91e8.pth`, where every
  official DeepLab-v2 run starts): the ResNet-101 under `Scale.` plus a 21-class COCO ASPP
  `Scale.layer5`. It converts into `deeplabv2_r101`, `muhdi_deeplabv2_r101` and
  `diga_deeplabv2_r101` (whose stem is `layer0.{0,1}`): the backbone from the file, the COCO head
  dropped and the model's heads drawn by its own initialisers from `seed`, as the official
  scripts' loading loops skip `layer5` and keep their fresh heads.
- DiGA's translator: two files, `enc_s.pth` and `dec_s2t.pth` (`translator_state_dict` joins
  them; on the command line `--torch-checkpoint enc_s.pth --decoder-checkpoint dec_s2t.pth`).
- torchvision's VGG-19 (`vgg19_features`, the perceptual loss's network): `features.{i}` up to
  conv5_1 (index 28); the later convs (30, 32, 34) and the `classifier` are dropped. DiGA's
  translator discriminators were not released: `multiscale_image_discriminator` has no
  converter.

CLI:
  python -m dakd_jax.tools.convert --model drn_d_22 --torch-checkpoint drn.pth --out weights/drn22
writes a variables directory (`networks.save_network`: Orbax variables plus `model.json` with the
architecture and options), the format training reads with `--config.<network>.init`.
"""

import argparse
import os
import re
import sys
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from dakd_jax import errors
from dakd_jax import models
from dakd_jax.models import drn
from dakd_jax.models import vgg

_RENAMES = {
    'seg_main': 'seg1', 'seg_aux': 'seg2', 'aux_head': 'layer5', 'main_head': 'layer6',
    'aux_specialist_head': 'layer7', 'main_specialist_head': 'layer8',
    'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1',
    'kernel': 'weight', 'scale': 'weight', 'mean': 'running_mean', 'var': 'running_var',
}
_DRN_CONV_STACKS = ('layer0', 'layer1', 'layer2', 'layer7', 'layer8')
# SKD PSPNet: Flax module name -> official nn.Sequential position.
_PSP_RENAMES = {
    'bottleneck_conv': 'bottleneck.0', 'bottleneck_bn': 'bottleneck.1',
    'dsn_conv': 'dsn.0', 'dsn_bn': 'dsn.1', 'dsn_classifier': 'dsn.3',
}
# SKD discriminator: Flax name -> official name.
_SKD_D_RENAMES = {'preprocess': 'preprocess_additional', 'last': 'last.0', 'kernel': 'weight',
                  'u': 'weight_u', 'v': 'weight_v'}
# DiGA's SegModel: the stem inside `layer0`, the ProDA head as `final` (official key names).
_DIGA_TOP = {'conv1': 'layer0.0', 'bn1': 'layer0.1', 'head': 'final'}
# DiGA's translator: the halves' `model.{i}` entries (decoder: 1 and 3 are parameter-free
# upsamplings); residual convs `res{i}_conv{j}` sit at `model.{stack}.model.{i}.model.{j}`.
_TRANSLATOR = {'encoder': {'stem': 'model.0', 'down0': 'model.1', 'down1': 'model.2',
                           'res': 'model.3'},
               'decoder': {'res': 'model.0', 'up0': 'model.2', 'up1': 'model.4', 'out': 'model.5'}}
_DIGA_HEAD = {'se': 'bottleneck.0', 'fc1': 'se.0', 'fc2': 'se.2', 'bottleneck_conv': 'bottleneck.1',
              'bottleneck_norm': 'bottleneck.2', 'classifier': 'head.1'}
# Keys present in official checkpoints that no Flax variable corresponds to.
_VGG_INDEX = {name: index for name, index, _ in vgg.CONV_LAYERS}
_DROPPED = {'drn': ('up1.weight', 'up2.weight', 'fc.weight', 'fc.bias'),
            'pspnet': ('fc.weight', 'fc.bias'),
            'vgg19_features': tuple(f'{layer}.{leaf}' for layer in (
                'features.30', 'features.32', 'features.34', 'classifier.0', 'classifier.3',
                'classifier.6') for leaf in ('weight', 'bias'))}


def _torch_key(model_name: str, path: Tuple[str, ...]) -> str:
  """Official state_dict key of a Flax variable path (without DRN's `base.` prefix)."""
  if model_name == 'skd_discriminator':
    if re.fullmatch(r'l\d', path[0]):  # SAGAN's SpectralNorm wraps the conv as `module`.
      return f'{path[0]}.0.module.' + ('weight_bar' if path[1] == 'kernel'
                                       else _SKD_D_RENAMES.get(path[1], path[1]))
    return '.'.join(_SKD_D_RENAMES.get(n, _RENAMES.get(n, n)) for n in path)
  if model_name == 'vgg19_features':
    return f'features.{_VGG_INDEX[path[0]]}.{_RENAMES.get(path[1], path[1])}'
  if model_name == 'diga_translator':
    half, block, conv, leaf = path
    res = re.fullmatch(r'res(\d+)_conv(\d+)', block)
    block = (f"{_TRANSLATOR[half]['res']}.model.{res.group(1)}.model.{res.group(2)}" if res
             else _TRANSLATOR[half][block])
    return f'{half}.{block}.{conv}.{_RENAMES.get(leaf, leaf)}'
  parts = []
  diga = model_name == 'diga_deeplabv2_r101'
  for depth, name in enumerate(path):
    stack_child = re.fullmatch(r'(conv|bn)(\d+)', name)
    head_branch = re.fullmatch(r'branch(\d+)_(conv|norm)', name)
    if diga and depth == 0 and name in _DIGA_TOP:
      parts.append(_DIGA_TOP[name])
    elif diga and path[0] == 'head' and (name in _DIGA_HEAD or head_branch):
      parts.append(_DIGA_HEAD[name] if name in _DIGA_HEAD else
                   f'conv2d_list.{head_branch.group(1)}.{int(head_branch.group(2) == "norm")}')
    elif (model_name.startswith('drn') and depth == 1 and path[0] in _DRN_CONV_STACKS and
        stack_child):
      # nn.Sequential of [conv, BN, ReLU] repeats: conv i sits at 3i, its BN at 3i + 1.
      parts.append(str(3 * int(stack_child.group(2)) + (stack_child.group(1) == 'bn')))
    elif re.fullmatch(r'block\d+', name):
      parts.append(name[len('block'):])
    elif re.fullmatch(r'branch\d+', name):
      parts.append('conv2d_list.' + name[len('branch'):])
    elif model_name.startswith('pspnet') and re.fullmatch(r'stage\d+_(conv|bn)', name):
      index, layer = name[len('stage'):].split('_')
      parts.append(f'stages.{index}.{1 if layer == "conv" else 2}')
    elif model_name.startswith('pspnet') and name in _PSP_RENAMES:
      parts.append(_PSP_RENAMES[name])
    else:
      parts.append(_RENAMES.get(name, name))
  return '.'.join(parts)


def _to_numpy(key: str, value: Any) -> np.ndarray:
  """A torch tensor or NumPy value as a NumPy array (possibly sharing the tensor's memory)."""
  if hasattr(value, 'detach'):  # torch.Tensor, without importing torch.
    value = value.detach().cpu().numpy()
  if not isinstance(value, (np.ndarray, np.generic)):
    raise ValueError(f'state_dict entry {key!r} is a {type(value).__name__}, expected an array')
  return np.asarray(value)


def _sagan_spectral_names(state: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """`torch.nn.utils.spectral_norm` keys of the SKD discriminator -> the SAGAN wrapper's."""
  renamed = {}
  for key, value in state.items():
    match = re.fullmatch(r'(l\d\.0)\.(weight_orig|weight_u|weight_v|bias)', key)
    if match:
      name = 'weight_bar' if match.group(2) == 'weight_orig' else match.group(2)
      key = f'{match.group(1)}.module.{name}'
    renamed[key] = value
  return renamed


def _normalise_state_dict(obj: Any) -> Dict[str, np.ndarray]:
  """Unwraps checkpoint dicts/modules, strips `module.`, converts values to NumPy."""
  if hasattr(obj, 'state_dict') and callable(obj.state_dict):
    obj = obj.state_dict()
  while isinstance(obj, Mapping):
    inner = next((obj[k] for k in ('state_dict', 'model') if k in obj), None)
    if inner is None:
      break
    obj = inner.state_dict() if hasattr(inner, 'state_dict') else inner
  if not isinstance(obj, Mapping):
    raise ValueError(f'expected a state_dict mapping of names to arrays, got {type(obj).__name__}')
  return {k[len('module.'):] if k.startswith('module.') else k: _to_numpy(k, v)
          for k, v in obj.items()}


DEEPLAB_INIT_PREFIX = 'Scale.'
DEEPLAB_INIT_MODELS = ('deeplabv2_r101', 'muhdi_deeplabv2_r101', 'diga_deeplabv2_r101')


def _from_deeplab_init(state: Mapping[str, np.ndarray], model_name: str) -> Dict[str, np.ndarray]:
  """The DeepLab init's backbone under `model_name`'s keys, its COCO `layer5` left out."""
  if model_name not in DEEPLAB_INIT_MODELS:
    raise ValueError(f'a DeepLab init ({DEEPLAB_INIT_PREFIX}* keys) converts into one of '
                     f'{", ".join(DEEPLAB_INIT_MODELS)}, not {model_name}')
  stem = {'conv1.': 'layer0.0.', 'bn1.': 'layer0.1.'} if model_name.startswith('diga') else {}
  backbone = {}
  for key, value in state.items():
    key = key[len(DEEPLAB_INIT_PREFIX):]
    if key.startswith('layer5.'):
      continue
    old = next((o for o in stem if key.startswith(o)), None)
    backbone[stem[old] + key[len(old):] if old else key] = value
  return backbone


def _initial_leaves(model_name: str, num_classes: int, seed: int, options: Mapping[str, Any],
                    paths: Sequence[Tuple[str, ...]]) -> Dict[Tuple[str, ...], np.ndarray]:
  """The leaves at `paths` of the model's random initial variables (`networks.init_variables`
  with PRNGKey(seed), as a stage starting from random weights draws them)."""
  from dakd_jax import networks  # pylint: disable=g-import-not-at-top  (Orbax is heavy)
  variables = networks.init_variables(models.create_model(model_name, num_classes, **options),
                                      jax.random.PRNGKey(seed))
  out = {}
  for path in paths:
    node = variables
    for name in path:
      node = node[name]
    out[path] = np.array(node, np.float32)
  return out


def _fresh_head(num_classes: int, in_features: int, seed: int,
                index: int) -> Dict[str, np.ndarray]:
  """Initial parameters of one DRN head (used when converting an ImageNet classifier)."""
  head = drn.seg_head(num_classes)
  rng = jax.random.fold_in(jax.random.PRNGKey(seed), index)
  params = head.init(rng, jnp.zeros((1, 1, 1, in_features), jnp.float32))['params']
  return jax.tree.map(np.asarray, params)


def torch_to_flax(state_dict: Any, model_name: str, *, num_classes: int = 19, seed: int = 0,
                  **options: Any) -> Dict[str, Any]:
  """Converts an official PyTorch state_dict into `{'params', 'batch_stats'}` NumPy trees.

  Args:
    state_dict: mapping name -> NumPy array or torch tensor (or a checkpoint dict wrapping one
      under 'state_dict'/'model', or an nn.Module); a `module.` prefix is stripped.
    model_name: a `dakd_jax.models` name.
    num_classes: classes of the heads (discriminator: input channels).
    seed: seeds the heads when `state_dict` has none: DRN's from an ImageNet classifier,
      DeepLab's from the DeepLab init.
    **options: model options (e.g. `width`, `aux_tap`, `aspp_branches`, `ndf`, `conv_dim`).

  Returns:
    Variables with conv kernels in HWIO layout, float32 (the FCDiscriminator has only 'params';
    the SKD discriminator also 'batch_stats' and 'spectral').

  Raises:
    ValueError: one error listing every missing, unexpected and mis-shaped key.
  """
  state = _normalise_state_dict(state_dict)
  deeplab_init = bool(state) and all(k.startswith(DEEPLAB_INIT_PREFIX) for k in state)
  if deeplab_init:
    state = _from_deeplab_init(state, model_name)
  fresh_heads = set(models.head_modules(model_name)) if deeplab_init else set()
  if model_name == 'skd_discriminator':
    state = _sagan_spectral_names(state)
  abstract = models.abstract_variables(model_name, num_classes, **options)
  family = next((f for f in ('drn', 'pspnet') if model_name.startswith(f)), model_name)
  base_prefix = 'base.' if family == 'drn' and any(k.startswith('base.') for k in state) else ''
  released_teacher = family == 'pspnet' and any(k.startswith('head.0.') for k in state)
  imagenet_drn = family == 'drn' and not base_prefix
  used, missing, misshaped, fresh, initialised = set(), [], [], {}, []
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
    names = tuple(p.key for p in path)
    collection, var_path = names[0], names[1:]
    key = _torch_key(model_name, var_path)
    if family == 'drn' and var_path[0] not in drn.DRNSeg.HEAD_MODULES:
      key = base_prefix + key
    if released_teacher and var_path[0] in ('pspmodule', 'head'):
      key = ('head.0.' if var_path[0] == 'pspmodule' else 'head.1.') + key.split('.', 1)[1]
    if key not in state:
      if imagenet_drn and var_path[0] in drn.DRNSeg.HEAD_MODULES:
        fresh[var_path[0]] = leaf
        continue
      if var_path[0] in fresh_heads:
        initialised.append((collection,) + var_path)
        continue
      missing.append(key)
      continue
    used.add(key)
    value = state[key]
    # Conv kernels OIHW -> HWIO, Linear weights [out, in] -> Dense kernels [in, out].
    order = {4: (2, 3, 1, 0), 2: (1, 0)}.get(leaf.ndim)
    expected = tuple(leaf.shape[order.index(i)] for i in range(leaf.ndim)) if order else leaf.shape
    if value.shape != tuple(expected):
      misshaped.append(f'{key}: got {tuple(value.shape)}, expected {tuple(expected)}')
      continue
    if order:
      value = value.transpose(order)
    # np.array copies: torch's .numpy() shares memory, and torch updates BN stats in place.
    flat[(collection,) + var_path] = np.array(value, np.float32)
  dropped = set(_DROPPED.get(family, ()))
  unexpected = sorted(k for k in state if k not in used and k not in dropped
                      and not k.endswith('num_batches_tracked'))
  if missing or unexpected or misshaped:
    problems = [f'{label} {items}' for label, items in (
        ('missing keys', missing), ('unexpected keys', unexpected),
        ('mis-shaped keys', misshaped)) if items]
    raise ValueError(f'state_dict does not match {model_name}: ' + '; '.join(problems))
  if initialised:
    flat.update(_initial_leaves(model_name, num_classes, seed, options, initialised))
  for index, head in enumerate(sorted(fresh)):
    in_features = abstract['params'][head]['kernel'].shape[2]
    for leaf_name, value in _fresh_head(num_classes, in_features, seed, index).items():
      flat[('params', head, leaf_name)] = value
  return _unflatten(flat)


def translator_state_dict(encoder_state: Any, decoder_state: Any) -> Dict[str, np.ndarray]:
  """DiGA's two translator files (`enc_s.pth`, `dec_s2t.pth`) as one state_dict whose keys carry
  an `encoder.` / `decoder.` prefix: the input `torch_to_flax(..., 'diga_translator')` takes."""
  return {f'{half}.{k}': v for half, state in (('encoder', encoder_state),
                                                 ('decoder', decoder_state))
          for k, v in _normalise_state_dict(state).items()}


def _unflatten(flat: Mapping[Tuple[str, ...], np.ndarray]) -> Dict[str, Any]:
  tree: Dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = value
  return tree


def load_torch_checkpoint(path: str, trust_pickle: bool = False) -> Dict[str, np.ndarray]:
  """Reads a .pth file into a NumPy state_dict.

  By default `torch.load(weights_only=True)`, which refuses pickled objects. Whole pickled
  nn.Modules (some official snapshots) need `trust_pickle=True`: unpickling runs arbitrary code.
  """
  import torch  # pylint: disable=g-import-not-at-top  (optional extra)
  if not os.path.isfile(path):
    raise errors.MissingPathError(f'{path}: no such checkpoint file')
  try:
    obj = torch.load(path, map_location='cpu', weights_only=not trust_pickle)
  except Exception as e:  # pylint: disable=broad-except  (torch raises many kinds on bad files)
    text = ' '.join(str(e).split())
    if not trust_pickle and 'Weights only load failed' in text:
      raise errors.UserError(
          f'{path}: holds pickled Python objects, not a plain state_dict; if you trust its '
          'source, re-run with --trust-pickle (unpickling runs arbitrary code)') from None
    raise errors.UserError(f'{path}: not a PyTorch checkpoint that torch.load can read '
                           f'({type(e).__name__}: {text[:160]})') from None
  return _normalise_state_dict(obj)


def main(argv: Optional[Sequence[str]] = None) -> None:
  """The conversion CLI; exits with a one-line `error: ...` on bad input."""
  parser = argparse.ArgumentParser(
      prog='python -m dakd_jax.tools.convert',
      description='Convert an official PyTorch checkpoint into dakd-jax Flax variables.')
  parser.add_argument('--model', required=True, choices=models.MODEL_NAMES)
  parser.add_argument('--torch-checkpoint', required=True, help='.pth file')
  parser.add_argument('--out', required=True, help='output directory')
  parser.add_argument('--num-classes', type=int, default=19)
  parser.add_argument('--width', type=float, help="channel multiplier (DRN, PSPNet)")
  parser.add_argument('--aux-tap', choices=drn.AUX_TAPS, help='DRN auxiliary-head tap')
  parser.add_argument('--aspp-branches', type=int, choices=(2, 4), help='DeepLab ASPP branches')
  parser.add_argument('--ndf', type=int, help='FCDiscriminator width')
  parser.add_argument('--conv-dim', type=int, help='SKD discriminator width')
  parser.add_argument('--decoder-checkpoint',
                      help="diga_translator: dec_s2t.pth (--torch-checkpoint is enc_s.pth)")
  parser.add_argument('--seed', type=int, default=0, help='init of heads missing from the file')
  parser.add_argument('--trust-pickle', action='store_true',
                      help='load pickled nn.Module files (runs arbitrary code: trusted files only)')
  args = parser.parse_args(argv)
  options = {name: value for name, value in (
      ('width', args.width), ('aux_tap', args.aux_tap), ('aspp_branches', args.aspp_branches),
      ('ndf', args.ndf), ('conv_dim', args.conv_dim)) if value is not None}
  from dakd_jax import networks  # pylint: disable=g-import-not-at-top  (Orbax is heavy)
  try:
    if (args.model == 'diga_translator') != bool(args.decoder_checkpoint):
      raise errors.UserError('--decoder-checkpoint: expected exactly with --model diga_translator '
                             '(dec_s2t.pth beside --torch-checkpoint enc_s.pth)')
    state = load_torch_checkpoint(args.torch_checkpoint, args.trust_pickle)
    if args.decoder_checkpoint:
      state = translator_state_dict(
          state, load_torch_checkpoint(args.decoder_checkpoint, args.trust_pickle))
    variables = torch_to_flax(state, args.model, num_classes=args.num_classes, seed=args.seed,
                              **options)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(errors.EXIT_USER_ERROR)
  # The same variables directory a finished stage exports: `--config.<net>.init` reads it.
  networks.save_network(args.out, {'arch': args.model, 'num_classes': args.num_classes,
                                   'options': options}, variables)
  print(f'wrote {args.model} ({models.count_params(variables):,} parameters) to {args.out}')


if __name__ == '__main__':
  main()
