"""DiGA's segmentation network (method.md §6.1): DeepLab-v2 ResNet-101 + ProDA's SE/GroupNorm head.

The body is the ResNet-101 of `deeplab.py` (frozen-affine BatchNorm in train mode, layer3/4
dilated by 2/4, output stride 8). The head (official `Classifier_Module2`) runs five parallel
branches on the 2048-channel layer4 map, a 1x1 conv and four 3x3 convs of dilation 6/12/18/24, each
to 256 channels + GroupNorm(32) + ReLU; concatenates them (1280 channels), re-weights the channels
with a squeeze-and-excitation block (reduction 16), fuses them with a 3x3 conv to 256 channels +
GroupNorm (no ReLU), applies channel dropout (0.1, training only) and classifies with a bias-free
1x1 conv. The 256-d map after the dropout is DiGA's `feat`, the features its class centroids live in.
"""

from typing import Any, ClassVar, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from dakd_jax.models import deeplab
from dakd_jax.models import layers

HEAD_DILATIONS = (6, 12, 18, 24)
FEATURES = 256
GROUPS = 32
SE_REDUCTION = 16
# Official init: convs and SE kaiming-normal with zero bias, the classifier N(0, 0.001).
_KAIMING = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def group_norm(name: str, dtype: Any) -> nn.GroupNorm:
  """torch `GroupNorm(32, C)`: eps 1e-5, two-pass variance, float32 scale/bias."""
  return nn.GroupNorm(num_groups=GROUPS, epsilon=1e-5, use_fast_variance=False, dtype=dtype,
                      param_dtype=jnp.float32, name=name)


class SqueezeExcitation(nn.Module):
  """x * sigmoid(W2 relu(W1 mean_hw(x))) on [N, H, W, C]; W1: C -> C / r, W2: C / r -> C."""
  reduction: int = SE_REDUCTION
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32,
                                     kernel_init=_KAIMING, name=name)
    w = jnp.mean(x, axis=(1, 2))
    w = nn.sigmoid(dense(channels, 'fc2')(nn.relu(dense(channels // self.reduction, 'fc1')(w))))
    return x * w[:, None, None, :].astype(x.dtype)


class ProDAHead(nn.Module):
  """ProDA/DiGA classifier: [N, h, w, 2048] -> (logits [N, h, w, C], features [N, h, w, 256])."""
  num_classes: int
  dropout_rate: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    conv = lambda f, k, name, **kw: layers.conv2d(f, k, kernel_init=_KAIMING, dtype=self.dtype,
                                                  name=name, **kw)
    branches = [nn.relu(group_norm('branch0_norm', self.dtype)(
        conv(FEATURES, 1, 'branch0_conv', use_bias=True)(x)))]
    for i, d in enumerate(HEAD_DILATIONS, start=1):
      y = conv(FEATURES, 3, f'branch{i}_conv', dilation=d, use_bias=True)(x)
      branches.append(nn.relu(group_norm(f'branch{i}_norm', self.dtype)(y)))
    y = SqueezeExcitation(dtype=self.dtype, name='se')(jnp.concatenate(branches, axis=-1))
    y = group_norm('bottleneck_norm', self.dtype)(
        conv(FEATURES, 3, 'bottleneck_conv', use_bias=True)(y))
    # torch Dropout2d: whole channels dropped per image, the rest scaled by 1 / (1 - rate).
    features = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(y)
    logits = layers.conv2d(self.num_classes, 1, kernel_init=layers.normal_init(0.001),
                           dtype=self.dtype, name='classifier')(features)
    return logits, features


class DiGADeepLabV2(nn.Module):
  """DiGA's SegModel: ResNet-101 (`conv1`, `bn1`, `layer1..4`) + `head` (`ProDAHead`).

  Attributes:
    num_classes: classifier outputs (19 for GTA5 -> Cityscapes, 16 for SYNTHIA).
    dropout_rate: the head's channel dropout in training (an rng named 'dropout' is then needed).
    dtype: compute dtype (parameters and normalisation statistics stay float32).
    freeze_bn_affine: the body's BatchNorm scale/bias frozen (official; GroupNorm is trained).
    bn_groups: BatchNorm statistics groups in training (see `layers.BatchNorm`).
    return_features: also return the head's 256-d `'features'` (DiGA's `feat`).
    remat: recompute every bottleneck in the backward pass.
  """
  HEAD_MODULES: ClassVar[tuple[str, ...]] = ('head',)

  num_classes: int = 19
  dropout_rate: float = 0.1
  dtype: Any = jnp.float32
  freeze_bn_affine: bool = True
  bn_groups: int = 1
  return_features: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> Dict[str, jax.Array]:
    """Maps images [N, H, W, 3] to `{'main': logits [N, h, w, C]}` at output stride 8 (as
    DeepLabV2Multi; 512x896 -> 65x113), plus `'features'` [N, h, w, 256] with `return_features`.
    """
    stages = deeplab.resnet101_stages(images, train, freeze_bn_affine=self.freeze_bn_affine,
                                      bn_groups=self.bn_groups, dtype=self.dtype,
                                      remat=self.remat)
    logits, features = ProDAHead(self.num_classes, self.dropout_rate, self.dtype,
                                 name='head')(stages[3], train)
    out = {'main': logits}
    if self.return_features:
      out['features'] = features
    return out
