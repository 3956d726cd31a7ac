"""PyTorch reference networks written from the spec, with the official state_dict key names.

- `DRNSeg`: DAKD's multi-level DRN-D-22/38 (`base.layer*`, `seg1` main head, `seg2` aux head,
  optional dead `up1`/`up2` ConvTranspose2d); `DRN` alone has fyu/drn's keys without `fc`.
- `DeepLabMulti`: AdaptSegNet's DeepLab-v2 R101 (`conv1`, `bn1`, `layer1..4`, `layer5` aux and
  `layer6` main `conv2d_list`), with `aspp_branches` 2 (AdaptSegNet's early return) or 4.
- `DeepLabMuHDi`: MuHDi's 4-head variant: `layer5`/`layer6` agnostic, `layer7`/`layer8`
  specialist (aux/main), plus the post-ReLU output of each stage's last block ("attentions").
- `FCDiscriminator`: `conv1..conv4`, `classifier`.
Layouts are NCHW; segmentation models return (aux logits, main logits) at output stride 8.
"""

import math

import torch
from torch import nn
import torch.nn.functional as F

DRN_CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
DRN_BLOCKS = {'drn_d_22': (1, 1, 2, 2, 2, 2, 1, 1), 'drn_d_38': (1, 1, 3, 4, 6, 3, 1, 1)}
DEFAULT_AUX_TAP = {'drn_d_22': 'layer6', 'drn_d_38': 'layer7'}


def _drn_conv_init_(module):
  for m in module.modules():
    if isinstance(m, nn.Conv2d):
      n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
      m.weight.data.normal_(0, math.sqrt(2.0 / n))
      if m.bias is not None:
        m.bias.data.zero_()


def _conv_stack(in_ch, out_ch, num_convs, kernel_size=3, stride=1, dilation=1):
  mods = []
  for i in range(num_convs):
    pad = dilation * (kernel_size - 1) // 2
    mods += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, kernel_size,
                       stride=stride if i == 0 else 1, padding=pad, dilation=dilation,
                       bias=False),
             nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
  return nn.Sequential(*mods)


class BasicBlock(nn.Module):
  """DRN BasicBlock: 3x3 (stride) + BN + ReLU, 3x3 + BN, residual (projected), ReLU."""

  def __init__(self, in_ch, out_ch, stride=1, dilation=1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, dilation, dilation, bias=False)
    self.bn1 = nn.BatchNorm2d(out_ch)
    self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, dilation, dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(out_ch)
    self.downsample = None
    if stride != 1 or in_ch != out_ch:
      self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                      nn.BatchNorm2d(out_ch))

  def forward(self, x):
    residual = x if self.downsample is None else self.downsample(x)
    y = F.relu(self.bn1(self.conv1(x)))
    return F.relu(self.bn2(self.conv2(y)) + residual)


class DRN(nn.Module):
  """DRN-D backbone (fyu/drn, no fc); `forward` returns the outputs of layer0..layer8."""

  def __init__(self, arch='drn_d_22', width=1.0):
    super().__init__()
    ch = [max(1, int(round(c * width))) for c in DRN_CHANNELS]
    blocks = DRN_BLOCKS[arch]
    self.out_channels = ch
    self.layer0 = _conv_stack(3, ch[0], 1, kernel_size=7)
    self.layer1 = _conv_stack(ch[0], ch[0], blocks[0])
    self.layer2 = _conv_stack(ch[0], ch[1], blocks[1], stride=2)
    in_ch = ch[1]
    for i, (stride, dilation) in zip(range(2, 6), ((2, 1), (2, 1), (1, 2), (1, 4))):
      stage = [BasicBlock(in_ch if j == 0 else ch[i], ch[i], stride if j == 0 else 1, dilation)
               for j in range(blocks[i])]
      setattr(self, f'layer{i + 1}', nn.Sequential(*stage))
      in_ch = ch[i]
    self.layer7 = _conv_stack(ch[5], ch[6], blocks[6], dilation=2)
    self.layer8 = _conv_stack(ch[6], ch[7], blocks[7])
    _drn_conv_init_(self)

  def forward(self, x):
    outs = {}
    for i in range(9):
      x = getattr(self, f'layer{i}')(x)
      outs[f'layer{i}'] = x
    return outs


class DRNSeg(nn.Module):
  """DAKD's multi-level DRNSeg: `seg1` (main) on layer8, `seg2` (aux) on the tap layer."""

  def __init__(self, arch='drn_d_22', num_classes=19, width=1.0, aux_tap=None,
               dead_upconvs=False):
    super().__init__()
    self.aux_tap = aux_tap or DEFAULT_AUX_TAP[arch]
    self.base = DRN(arch, width)
    tap_ch = self.base.out_channels[5 if self.aux_tap == 'layer6' else 6]
    self.seg1 = nn.Conv2d(self.base.out_channels[7], num_classes, 1, bias=True)
    self.seg2 = nn.Conv2d(tap_ch, num_classes, 1, bias=True)
    _drn_conv_init_(self.seg1)
    _drn_conv_init_(self.seg2)
    if dead_upconvs:  # Built but never used by DAKD; only present for key/parameter parity.
      self.up1 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, padding=4,
                                    groups=num_classes, bias=False)
      self.up2 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, padding=4,
                                    groups=num_classes, bias=False)

  def forward(self, x):
    """[N, 3, H, W] -> (aux logits, main logits), each [N, C, ceil(H/8), ceil(W/8)]."""
    outs = self.base(x)
    return self.seg2(outs[self.aux_tap]), self.seg1(outs['layer8'])

  def log_probs(self, x):
    """DAKD's outputs (pred1, pred2): x8 align-corners upsampled log-softmax (aux, main)."""
    return tuple(F.log_softmax(F.interpolate(y, scale_factor=8, mode='bilinear',
                                             align_corners=True), dim=1)
                 for y in self.forward(x))


class Bottleneck(nn.Module):
  """Caffe bottleneck: 1x1 (stride) -> 3x3 (dilation) -> 1x1 x4, residual, ReLU."""

  def __init__(self, in_ch, planes, stride=1, dilation=1, project=False):
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, planes, 1, stride, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = None
    if project:
      self.downsample = nn.Sequential(nn.Conv2d(in_ch, planes * 4, 1, stride, bias=False),
                                      nn.BatchNorm2d(planes * 4))

  def forward(self, x):
    residual = x if self.downsample is None else self.downsample(x)
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    return F.relu(self.bn3(self.conv3(y)) + residual)


class Classifier(nn.Module):
  """ASPP-v2: sum of the first `live` of four dilated 3x3 convs (all four hold weights)."""

  def __init__(self, in_ch, num_classes, live=4):
    super().__init__()
    self.live = live
    self.conv2d_list = nn.ModuleList(
        [nn.Conv2d(in_ch, num_classes, 3, 1, d, d, bias=True) for d in (6, 12, 18, 24)])

  def forward(self, x):
    return sum(conv(x) for conv in self.conv2d_list[:self.live])


def add_resnet101_stages(module):
  """Gives `module` DeepLab-v2's `layer1..layer4` (3, 4, 23, 3 bottlenecks; strides 1, 2, 1, 1;
  dilations 1, 1, 2, 4; a projection on every stage's first block)."""
  in_ch = 64
  for i, (planes, blocks, stride, dilation) in enumerate(
      ((64, 3, 1, 1), (128, 4, 2, 1), (256, 23, 1, 2), (512, 3, 1, 4))):
    stage = [Bottleneck(in_ch if j == 0 else planes * 4, planes, stride if j == 0 else 1,
                        dilation, project=j == 0) for j in range(blocks)]
    setattr(module, f'layer{i + 1}', nn.Sequential(*stage))
    in_ch = planes * 4


class DeepLabMulti(nn.Module):
  """DeepLab-v2 ResNet-101 multi; `forward` returns (layer5 aux, layer6 main) logits."""

  def __init__(self, num_classes=19, aspp_branches=4):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    add_resnet101_stages(self)
    self.layer5 = Classifier(1024, num_classes, aspp_branches)
    self.layer6 = Classifier(2048, num_classes, aspp_branches)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        m.weight.data.normal_(0, 0.01)
        if m.bias is not None:
          m.bias.data.zero_()
    for m in self.modules():  # AdaptSegNet freezes every BN affine parameter.
      if isinstance(m, nn.BatchNorm2d):
        m.weight.requires_grad_(False)
        m.bias.requires_grad_(False)

  def stages(self, x):
    """The outputs of layer1..layer4 (each the post-ReLU output of its last block)."""
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    outs = []
    for i in range(1, 5):
      x = getattr(self, f'layer{i}')(x)
      outs.append(x)
    return outs

  def forward(self, x):
    outs = self.stages(x)
    return self.layer5(outs[2]), self.layer6(outs[3])


class DeepLabMuHDi(DeepLabMulti):
  """MuHDi's DeepLab: `forward` returns (layer5 aux agnostic, layer6 main agnostic, layer7 aux
  specialist, layer8 main specialist, [layer1..4 outputs])."""

  def __init__(self, num_classes=19, aspp_branches=4):
    super().__init__(num_classes, aspp_branches)
    self.layer7 = Classifier(1024, num_classes, aspp_branches)
    self.layer8 = Classifier(2048, num_classes, aspp_branches)
    for head in (self.layer7, self.layer8):
      for conv in head.conv2d_list:
        conv.weight.data.normal_(0, 0.01)
        conv.bias.data.zero_()

  def forward(self, x):
    outs = self.stages(x)
    return (self.layer5(outs[2]), self.layer6(outs[3]), self.layer7(outs[2]),
            self.layer8(outs[3]), outs)


class FCDiscriminator(nn.Module):
  """Five 4x4/s2/p1 convs with bias, LeakyReLU(0.2) after the first four, logits."""

  def __init__(self, num_classes=19, ndf=64):
    super().__init__()
    self.conv1 = nn.Conv2d(num_classes, ndf, 4, 2, 1)
    self.conv2 = nn.Conv2d(ndf, ndf * 2, 4, 2, 1)
    self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1)
    self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1)
    self.classifier = nn.Conv2d(ndf * 8, 1, 4, 2, 1)

  def forward(self, x):
    for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
      x = F.leaky_relu(conv(x), 0.2)
    return self.classifier(x)


def create_reference(name, num_classes=19, **options):
  """The reference for a `dakd_jax.models` name, with the same option names."""
  if name in DRN_BLOCKS:
    return DRNSeg(name, num_classes, **options)
  if name == 'deeplabv2_r101':
    return DeepLabMulti(num_classes, **options)
  if name == 'muhdi_deeplabv2_r101':
    return DeepLabMuHDi(num_classes, **options)
  if name == 'fc_discriminator':
    return FCDiscriminator(num_classes, **options)
  raise ValueError(f'unknown reference model {name!r}')


@torch.no_grad()
def randomize_batchnorm_(model, seed=0):
  """Gives every BatchNorm non-trivial affine parameters and running statistics (for tests)."""
  gen = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
      n = m.num_features
      m.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=gen))
      m.bias.copy_(0.1 * torch.randn(n, generator=gen))
      m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
      m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
  return model
