"""PyTorch references of SKD's networks, written from method.md §5.1 with the official key names.

- `PSPNet('pspnet_r101' | 'pspnet_r18')`: `conv1..3`/`bn1..3` deep stem, `layer1..4` blocks,
  `pspmodule.stages.{i}.{1: conv, 2: ABN}`, `pspmodule.bottleneck.{0: conv, 1: ABN}`, `head`,
  `dsn.{0: conv, 1: ABN, 3: conv}`. `released_teacher_keys` renames `pspmodule.*` -> `head.0.*` and
  `head.*` -> `head.1.*` as in the released teacher checkpoint.
- `Discriminator`: SKD's holistic discriminator, `preprocess_additional` BatchNorm, `l1..l4.0`
  spectral-norm convs, `attn1`/`attn2` self-attention, `last.0`. It uses torch's own
  `nn.utils.spectral_norm` (`weight_orig`, `weight_u`, `weight_v`); `sagan_keys` renames a state
  dict to the official SAGAN wrapper's names (`module.weight_bar`, `module.weight_u`, ...).
Layouts are NCHW. InPlace-ABN is BatchNorm2d followed by an optional LeakyReLU(0.01).
"""

import torch
from torch import nn
import torch.nn.functional as F

_ARCHS = {'pspnet_r101': ('bottleneck', (3, 4, 23, 3), 512),
          'pspnet_r18': ('basic', (2, 2, 2, 2), 128)}


class ABN(nn.BatchNorm2d):
  """InPlace-ABN as plain BatchNorm2d + LeakyReLU(0.01) (`activation='none'`: BN alone)."""

  def __init__(self, channels, activation='leaky_relu'):
    super().__init__(channels)
    self.activation = activation

  def forward(self, x):
    x = super().forward(x)
    return F.leaky_relu(x, 0.01) if self.activation == 'leaky_relu' else x


def _bn(channels):
  return ABN(channels, activation='none')


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, in_ch, planes, stride=1, dilation=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, planes, 3, stride, dilation, dilation, bias=False)
    self.bn1 = _bn(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
    self.bn2 = _bn(planes)
    self.downsample = downsample

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  """torchvision bottleneck: the stride sits in the 3x3 conv."""
  expansion = 4

  def __init__(self, in_ch, planes, stride=1, dilation=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
    self.bn1 = _bn(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
    self.bn2 = _bn(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = _bn(planes * 4)
    self.downsample = downsample

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class PSPModule(nn.Module):

  def __init__(self, in_ch, out_ch, sizes=(1, 2, 3, 6)):
    super().__init__()
    self.stages = nn.ModuleList([
        nn.Sequential(nn.AdaptiveAvgPool2d(s), nn.Conv2d(in_ch, out_ch, 1, bias=False),
                      ABN(out_ch)) for s in sizes])
    self.bottleneck = nn.Sequential(
        nn.Conv2d(in_ch + len(sizes) * out_ch, out_ch, 3, padding=1, bias=False), ABN(out_ch),
        nn.Dropout2d(0.1))

  def forward(self, x):
    size = x.shape[2:]
    priors = [F.interpolate(stage(x), size=size, mode='bilinear', align_corners=True)
              for stage in self.stages]
    return self.bottleneck(torch.cat(priors + [x], 1))


class PSPNet(nn.Module):
  """`forward` returns [main logits, dsn logits, PSP features, layer4, layer3, layer2, layer1]."""

  def __init__(self, arch='pspnet_r18', num_classes=19, width=1.0):
    super().__init__()
    kind, blocks, head_width = _ARCHS[arch]
    block = Bottleneck if kind == 'bottleneck' else BasicBlock
    ch = lambda c: max(1, int(round(c * width)))
    self.conv1 = nn.Conv2d(3, ch(64), 3, 2, 1, bias=False)
    self.bn1 = _bn(ch(64))
    self.conv2 = nn.Conv2d(ch(64), ch(64), 3, 1, 1, bias=False)
    self.bn2 = _bn(ch(64))
    self.conv3 = nn.Conv2d(ch(64), ch(128), 3, 1, 1, bias=False)
    self.bn3 = _bn(ch(128))
    self.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    in_ch = ch(128)
    for i, (planes, stride, dilation) in enumerate(
        ((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4))):
      out_ch = ch(planes) * block.expansion
      downsample = None
      if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), _bn(out_ch))
      stage = [block(in_ch, ch(planes), stride, dilation, downsample)]
      stage += [block(out_ch, ch(planes), 1, dilation) for _ in range(1, blocks[i])]
      setattr(self, f'layer{i + 1}', nn.Sequential(*stage))
      in_ch = out_ch
    self.pspmodule = PSPModule(in_ch, ch(head_width))
    self.head = nn.Conv2d(ch(head_width), num_classes, 1)
    layer3_ch = ch(256) * block.expansion
    self.dsn = nn.Sequential(nn.Conv2d(layer3_ch, ch(head_width), 3, 1, 1), ABN(ch(head_width)),
                             nn.Dropout2d(0.1), nn.Conv2d(ch(head_width), num_classes, 1))

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = F.relu(self.bn2(self.conv2(x)))
    x = self.maxpool(F.relu(self.bn3(self.conv3(x))))
    x1 = self.layer1(x)
    x2 = self.layer2(x1)
    x3 = self.layer3(x2)
    x4 = self.layer4(x3)
    feat = self.pspmodule(x4)
    return [self.head(feat), self.dsn(x3), feat, x4, x3, x2, x1]


def released_teacher_keys(state_dict):
  """The state dict with the released teacher's names: `head.0.*` (PSP), `head.1.*` (classifier)."""
  renamed = {}
  for key, value in state_dict.items():
    if key.startswith('pspmodule.'):
      key = 'head.0.' + key[len('pspmodule.'):]
    elif key.startswith('head.'):
      key = 'head.1.' + key[len('head.'):]
    renamed[key] = value
  return renamed


class SelfAttn(nn.Module):
  """SAGAN self-attention: x + gamma * (values weighted by softmax over keys of query.key)."""

  def __init__(self, channels):
    super().__init__()
    self.query_conv = nn.Conv2d(channels, channels // 8, 1)
    self.key_conv = nn.Conv2d(channels, channels // 8, 1)
    self.value_conv = nn.Conv2d(channels, channels, 1)
    self.gamma = nn.Parameter(torch.zeros(1))

  def forward(self, x):
    n, c, h, w = x.shape
    query = self.query_conv(x).view(n, -1, h * w).permute(0, 2, 1)
    key = self.key_conv(x).view(n, -1, h * w)
    attention = torch.softmax(torch.bmm(query, key), dim=-1)
    value = self.value_conv(x).view(n, -1, h * w)
    out = torch.bmm(value, attention.permute(0, 2, 1)).view(n, c, h, w)
    return self.gamma * out + x


class Discriminator(nn.Module):
  """SKD's holistic discriminator with `torch.nn.utils.spectral_norm` convs (one power iteration
  per training forward; stored u, v in eval). Returns [N, 1, h, w] scores."""

  def __init__(self, num_classes=19, conv_dim=64):
    super().__init__()
    self.preprocess_additional = nn.BatchNorm2d(num_classes)
    in_ch = num_classes
    for i in range(4):
      out_ch = conv_dim * 2 ** i
      conv = nn.utils.spectral_norm(nn.Conv2d(in_ch, out_ch, 4, 2, 1))
      setattr(self, f'l{i + 1}', nn.Sequential(conv, nn.LeakyReLU(0.1)))
      in_ch = out_ch
    self.attn1 = SelfAttn(conv_dim * 4)
    self.attn2 = SelfAttn(conv_dim * 8)
    self.last = nn.Sequential(nn.Conv2d(in_ch, 1, 4))

  def forward(self, x):
    x = self.l3(self.l2(self.l1(self.preprocess_additional(x))))
    x = self.l4(self.attn1(x))
    return self.last(self.attn2(x))


def sagan_keys(state_dict):
  """`torch.nn.utils.spectral_norm` names -> the official SAGAN wrapper's (`l1.0.module.*`,
  `weight_orig` -> `weight_bar`)."""
  renamed = {}
  for key, value in state_dict.items():
    parts = key.split('.')
    if parts[0] in ('l1', 'l2', 'l3', 'l4'):
      name = 'weight_bar' if parts[2] == 'weight_orig' else parts[2]
      key = f'{parts[0]}.0.module.{name}'
    renamed[key] = value
  return renamed
