"""PyTorch references of DiGA's translator stage, written from the official definitions
(`model/model_noaux.py Discriminator`, `model/model_util.py Conv2dBlock`, `util/loss.py VGGLoss,
Vgg19, seg_edge_loss`, `train_domain_translator.py`). Layouts are NCHW; the tests run them in
float64.

- `Discriminator`: `cnns.{scale}` = Sequential of four zero-padded 4x4 / stride 2 conv blocks
  without bias + LeakyReLU(0.2) (`cnns.{s}.{i}.conv`) and a 1x1 conv with bias (`cnns.{s}.4`);
  `AvgPool2d(3, 2, 1, count_include_pad=False)` between scales; returns the list of score maps.
- `Vgg19`: torchvision's `vgg19().features` layout (`features.{i}` indices) up to relu5_1; the
  forward returns the five slices' ends (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1).
- `laplacian`: kornia 0.5.8's `laplacian(x, kernel_size, border_type='reflect', normalized=True)`
  (kornia is not a dependency: its kernel, normalisation and padding are re-written here).
- `seg_edge_loss`, `vgg_loss`, `lsgan_discriminator_loss`, `lsgan_generator_loss`, and
  `generator_loss`: the translator's total, as the official script sums it.
"""

import torch
from torch import nn
import torch.nn.functional as F


class ZeroPadConvBlock(nn.Module):
  """ZeroPad2d -> conv (no bias) -> LeakyReLU(0.2): the discriminator's `Conv2dBlock`."""

  def __init__(self, in_ch, out_ch):
    super().__init__()
    self.pad = nn.ZeroPad2d(1)
    self.conv = nn.Conv2d(in_ch, out_ch, 4, 2, bias=False)
    self.activation = nn.LeakyReLU(0.2)

  def forward(self, x):
    return self.activation(self.conv(self.pad(x)))


class Discriminator(nn.Module):
  """MUNIT's multi-scale discriminator: 3 scales, 4 layers, width 64."""

  def __init__(self, dim=64, n_layer=4, num_scales=3):
    super().__init__()
    self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)
    self.cnns = nn.ModuleList()
    for _ in range(num_scales):
      width, layers = dim, [ZeroPadConvBlock(3, dim)]
      for _ in range(n_layer - 1):
        layers.append(ZeroPadConvBlock(width, width * 2))
        width *= 2
      layers.append(nn.Conv2d(width, 1, 1, 1, 0))
      self.cnns.append(nn.Sequential(*layers))

  def forward(self, x):
    outputs = []
    for cnn in self.cnns:
      outputs.append(cnn(x))
      x = self.downsample(x)
    return outputs


_VGG19_E = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512)
_SLICE_ENDS = (2, 7, 12, 21, 30)  # Exclusive ends of the official slices (after each relu*_1).


class Vgg19(nn.Module):
  """`features` as torchvision numbers them, up to index 29 (relu5_1)."""

  def __init__(self):
    super().__init__()
    layers, channels = [], 3
    for v in _VGG19_E:
      if v == 'M':
        layers.append(nn.MaxPool2d(2, 2))
      else:
        layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU()]
        channels = v
    self.features = nn.Sequential(*layers)

  def forward(self, x):
    outputs, start = [], 0
    for end in _SLICE_ENDS:
      for i in range(start, end):
        x = self.features[i](x)
      outputs.append(x)
      start = end
    return outputs


def laplacian(x, kernel_size=5):
  """kornia 0.5.8 `laplacian`: per channel, reflect padding, kernel / sum(|kernel|)."""
  kernel = torch.ones(kernel_size, kernel_size, dtype=x.dtype)
  kernel[kernel_size // 2, kernel_size // 2] = 1 - kernel_size ** 2
  kernel = kernel / kernel.abs().sum()
  c, p = x.shape[1], kernel_size // 2
  padded = F.pad(x, [p, p, p, p], mode='reflect')
  return F.conv2d(padded, kernel.expand(c, 1, kernel_size, kernel_size), groups=c)


def seg_edge_loss(rgb_out, rgb_in, segm_gt):
  """The official `seg_edge_loss`'s loss (its unused RGB edges left out)."""
  segm = segm_gt.unsqueeze(1).detach().to(rgb_in.dtype)
  edges = (torch.abs(laplacian(segm)) > 0.1).to(rgb_in.dtype)
  edges = torch.cat((edges, edges, edges), 1)
  return F.l1_loss(rgb_in * edges, rgb_out * edges)


def vgg_loss(vgg, x, y, weights=(1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)):
  """The official `VGGLoss.forward`."""
  downsample = nn.AvgPool2d(2, stride=2, count_include_pad=False)
  while x.size()[3] > 1024:
    x, y = downsample(x), downsample(y)
  x_vgg, y_vgg = vgg(x), vgg(y)
  return sum(w * F.l1_loss(a, b.detach()) for w, a, b in zip(weights, x_vgg, y_vgg))


def lsgan_discriminator_loss(real_maps, fake_maps):
  return sum(torch.mean((r - 1) ** 2) + torch.mean((f - 0) ** 2)
             for r, f in zip(real_maps, fake_maps))


def lsgan_generator_loss(fake_maps):
  return sum(torch.mean((f - 1) ** 2) for f in fake_maps)


def generator_loss(images, xs, xt, ys, dis_s2t, dis_t2s, vgg=None, lambda_adv=0.5,
                   lambda_cyc=10.0, lambda_seg_edge=20.0, lambda_percep=0.1, lambda_self=0.001):
  """The script's `total_loss` from the translator's images (keys as `DiGACycleTranslator.cycle`:
  rec_s2t, rec_t2s, rec_s, rec_t, rec_s_cyc, rec_t_cyc); `vgg=None` leaves the perceptual term
  out."""
  recon_self = F.l1_loss(images['source_self'], xs) + F.l1_loss(images['target_self'], xt)
  recon_cyc = F.l1_loss(images['source_cycle'], xs) + F.l1_loss(images['target_cycle'], xt)
  translation = (lsgan_generator_loss(dis_s2t(images['s2t']))
                 + lsgan_generator_loss(dis_t2s(images['t2s'])))
  total = (lambda_adv * translation + lambda_cyc * recon_cyc
           + lambda_seg_edge * seg_edge_loss(images['s2t'], xs, ys) + lambda_self * recon_self)
  if vgg is not None:
    total = total + lambda_percep * (vgg_loss(vgg, images['s2t'], xs)
                                     + vgg_loss(vgg, images['t2s'], xt))
  return total
