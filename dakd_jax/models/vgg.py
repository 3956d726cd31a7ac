"""VGG-19's convolutional features up to relu5_1 (torchvision `vgg19().features[:30]`), the
frozen network of DiGA's perceptual loss (`util/loss.py Vgg19`).

3x3 convs (zero padding 1, bias) + ReLU, 2x2 / stride 2 max pools (floor), torchvision's
configuration 'E' up to conv5_1. The forward returns the five ReLU outputs the official `Vgg19`
slices end at: relu1_1 [N, H, W, 64], relu2_1 [N, H/2, W/2, 128], relu3_1 [N, H/4, W/4, 256],
relu4_1 [N, H/8, W/8, 512], relu5_1 [N, H/16, W/16, 512] (floor at each pool). The input is used
as given: the official loss feeds DiGA's normalised images (BGR minus the Caffe mean, / 128) and
the translator's tanh outputs, without ImageNet normalisation. 12,944,960 parameters.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dakd_jax.models import layers

# (block, convs in the block) up to conv5_1; a max pool precedes every block but the first.
_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 1, 512))


def conv_layers() -> tuple[tuple[str, int, int], ...]:
  """`(name, torchvision features index, output channels)` of every conv, in order."""
  out, index = [], 0
  for block, convs, channels in _BLOCKS:
    index += block > 1  # The max pool before the block.
    for i in range(convs):
      out.append((f'conv{block}_{i + 1}', index, channels))
      index += 2  # The conv and its ReLU.
  return tuple(out)


CONV_LAYERS = conv_layers()
TAPS = ('conv1_1', 'conv2_1', 'conv3_1', 'conv4_1', 'conv5_1')  # Their ReLUs are returned.


class VGG19Features(nn.Module):
  """[N, H, W, 3] -> (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1), see the module docstring.

  Attributes:
    dtype: compute dtype (parameters stay float32).
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    """`train` is accepted for a uniform model interface and ignored."""
    del train
    features = []
    for name, _, channels in CONV_LAYERS:
      if name.endswith('_1') and name != 'conv1_1':
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = nn.relu(layers.conv2d(channels, 3, use_bias=True, dtype=self.dtype, name=name)(x))
      if name in TAPS:
        features.append(x)
    return tuple(features)
