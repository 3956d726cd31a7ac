"""PyTorch references of DiGA's networks, written from method.md §6.1 with the official key names.

- `SegModel`: `layer0` (= Sequential(conv1, bn1, ReLU, ceil-mode max-pool)), `layer1..4`
  (the DeepLab-v2 ResNet-101 stages of `models.add_resnet101_stages`), `final` (the ProDA head:
  `conv2d_list.{0..4}` = Sequential(conv, GroupNorm, ReLU), `bottleneck` = Sequential(SE with
  `se.0`/`se.2` Linear layers, 3x3 conv, GroupNorm), `head` = Sequential(Dropout2d, 1x1 conv)).
  `forward` returns (layer2 output, layer4 output, logits, feat), as the official model.
- `ImgEncoder` / `ImgDecoder`: the translator halves saved as `enc_s.pth` / `dec_s2t.pth`
  (`model.{i}` Sequential entries; conv blocks hold `conv`, residual stacks `model.{j}.model.{0,1}`).
- `cross_entropy2d`, `distillation_loss`, `update_teacher_params`: the official loss helpers.
Layouts are NCHW.
"""

import torch
from torch import nn
from torch.nn import functional as F

from dakd_jax.torch_ref.models import add_resnet101_stages


class SEBlock(nn.Module):
  """x * sigmoid(Linear(ReLU(Linear(GAP(x))))), reduction r."""

  def __init__(self, channels, r=16):
    super().__init__()
    self.se = nn.Sequential(nn.Linear(channels, channels // r), nn.ReLU(),
                            nn.Linear(channels // r, channels), nn.Sigmoid())

  def forward(self, x):
    return x * self.se(x.mean(dim=(2, 3)))[:, :, None, None]


class ProDAHead(nn.Module):
  """Five 256-channel branches (1x1; 3x3 d=6/12/18/24) + GN + ReLU, concat, SE, 3x3 conv + GN,
  Dropout2d, bias-free 1x1 classifier; returns {'feat', 'out'}."""

  def __init__(self, in_ch, num_classes, droprate=0.1):
    super().__init__()
    branch = lambda conv: nn.Sequential(conv, nn.GroupNorm(32, 256), nn.ReLU())
    self.conv2d_list = nn.ModuleList(
        [branch(nn.Conv2d(in_ch, 256, 1, bias=True))] +
        [branch(nn.Conv2d(in_ch, 256, 3, 1, d, d, bias=True)) for d in (6, 12, 18, 24)])
    self.bottleneck = nn.Sequential(SEBlock(1280), nn.Conv2d(1280, 256, 3, 1, 1, bias=True),
                                    nn.GroupNorm(32, 256))
    self.head = nn.Sequential(nn.Dropout2d(droprate), nn.Conv2d(256, num_classes, 1, bias=False))

  def forward(self, x):
    y = self.bottleneck(torch.cat([b(x) for b in self.conv2d_list], dim=1))
    feat = self.head[0](y)
    return {'feat': feat, 'out': self.head[1](feat)}


class SegModel(nn.Module):
  """DiGA's DeepLab-v2 ResNet-101 with the ProDA head."""

  def __init__(self, num_classes=19, dropout_rate=0.1):
    super().__init__()
    self.layer0 = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                nn.ReLU(), nn.MaxPool2d(3, 2, 1, ceil_mode=True))
    add_resnet101_stages(self)
    self.final = ProDAHead(2048, num_classes, dropout_rate)

  def forward(self, x):
    x = self.layer2(self.layer1(self.layer0(x)))
    shallow = x
    x = self.layer4(self.layer3(x))
    out = self.final(x)
    return shallow, x, out['out'], out['feat']


class Conv2dBlock(nn.Module):
  """ReflectionPad -> conv (bias) -> InstanceNorm2d (no affine) or none -> activation."""

  def __init__(self, in_ch, out_ch, kernel_size, stride, padding, norm=True, activation='relu'):
    super().__init__()
    self.pad = nn.ReflectionPad2d(padding)
    self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, bias=True)
    self.norm = nn.InstanceNorm2d(out_ch) if norm else None
    self.activation = {'relu': nn.ReLU(), 'tanh': nn.Tanh(), 'none': None}[activation]

  def forward(self, x):
    x = self.conv(self.pad(x))
    x = self.norm(x) if self.norm is not None else x
    return self.activation(x) if self.activation is not None else x


class ResBlock(nn.Module):

  def __init__(self, dim):
    super().__init__()
    self.model = nn.Sequential(Conv2dBlock(dim, dim, 3, 1, 1),
                               Conv2dBlock(dim, dim, 3, 1, 1, activation='none'))

  def forward(self, x):
    return x + self.model(x)


class ResBlocks(nn.Module):

  def __init__(self, num_blocks, dim):
    super().__init__()
    self.model = nn.Sequential(*[ResBlock(dim) for _ in range(num_blocks)])

  def forward(self, x):
    return self.model(x)


class ImgEncoder(nn.Module):
  """7x7 conv 3->64, two 4x4/s2 convs to 256, four residual blocks (reflect padding, IN)."""

  def __init__(self):
    super().__init__()
    self.model = nn.Sequential(Conv2dBlock(3, 64, 7, 1, 3), Conv2dBlock(64, 128, 4, 2, 1),
                               Conv2dBlock(128, 256, 4, 2, 1), ResBlocks(4, 256))

  def forward(self, x):
    return self.model(x)


class ImgDecoder(nn.Module):
  """Four residual blocks, 2x (nearest upsample, 5x5 conv), 7x7 conv to 3 channels + tanh."""

  def __init__(self):
    super().__init__()
    self.model = nn.Sequential(
        ResBlocks(4, 256), nn.Upsample(scale_factor=2), Conv2dBlock(256, 128, 5, 1, 2),
        nn.Upsample(scale_factor=2), Conv2dBlock(128, 64, 5, 1, 2),
        Conv2dBlock(64, 3, 7, 1, 3, norm=False, activation='tanh'))

  def forward(self, x):
    return self.model(x)


@torch.no_grad()
def randomize_groupnorm_(model, seed=0):
  """Gives every GroupNorm non-trivial affine parameters (for tests)."""
  gen = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, nn.GroupNorm):
      m.weight.copy_(1.0 + 0.2 * torch.randn(m.num_channels, generator=gen))
      m.bias.copy_(0.1 * torch.randn(m.num_channels, generator=gen))
  return model


def cross_entropy2d(logits, labels):
  """DiGA's CE: NLL summed over pixels with labels in [0, C) (255 ignored), divided by the count
  of pixels with label >= 0 (ignored ones included). logits [N, C, H, W], labels [N, H, W]."""
  log_p = torch.log_softmax(logits, dim=1)
  valid = (labels >= 0) & (labels != 255)
  nll = -log_p.gather(1, torch.where(valid, labels, 0)[:, None])[:, 0]
  return (nll * valid).sum() / (labels >= 0).sum()


def ohem_cross_entropy(logits, labels, thresh=0.7, min_kept=100_000, ignore_label=255):
  """DiGA's SYNTHIA `OhemCrossEntropy` (one score map): the NLL of the valid pixels whose
  true-class probability is below max(thresh, the sorted probability at min(min_kept,
  n_valid - 1)), averaged. logits [N, C, H, W], labels [N, H, W]."""
  pixel_losses = F.cross_entropy(logits, labels, ignore_index=ignore_label,
                                 reduction='none').contiguous().view(-1)
  mask = labels.contiguous().view(-1) != ignore_label
  target = labels.clone()
  target[target == ignore_label] = 0
  pred = torch.softmax(logits, dim=1).gather(1, target.unsqueeze(1))
  pred, ind = pred.contiguous().view(-1)[mask].contiguous().sort()
  threshold = max(pred[min(min_kept, pred.numel() - 1)], thresh)
  pixel_losses = pixel_losses[mask][ind]
  return pixel_losses[pred < threshold].mean()


def distillation_loss(teacher_logits, student_logits, scale=0.5, labels=None):
  """DiGA's symmetric distillation on [view a; view b] batches (NCHW): for every (teacher view,
  other student view) pair, the soft CE summed over classes and averaged over pixels (over
  non-ignored pixels when `labels` are given); the pair with the teacher on view b scaled."""
  students = student_logits.chunk(2)
  teachers = torch.softmax(teacher_logits, dim=1).detach().chunk(2)
  total = 0
  for iq, q in enumerate(teachers):
    for v, s in enumerate(students):
      if v == iq:
        continue
      loss = torch.sum(-q * torch.log_softmax(s, dim=1), dim=1)
      if iq == 1:
        loss = loss * scale
      if labels is None:
        total = total + loss.mean()
      else:
        mask = (labels != 255).float()
        total = total + (loss * mask).sum() / (mask.sum() + 1e-7)
  return total


@torch.no_grad()
def update_teacher_params(teacher, student, iteration, ema_max=0.999):
  """Teacher parameters (not buffers) <- a * teacher + (1 - a) * student, a = min(1 - 1/(i+1),
  ema_max)."""
  a = min(1 - 1 / (iteration + 1), ema_max)
  for t, s in zip(teacher.parameters(), student.parameters()):
    t.data[:] = a * t.data + (1 - a) * s.data


class ClassFeatures:
  """The official centroid bank (`calc_centroids.Class_Features`), NCHW, written from the spec."""

  def __init__(self, num_classes, dim, momentum=1e-4):
    self.num_classes, self.momentum = num_classes, momentum
    self.vectors = torch.zeros(num_classes, dim, dtype=torch.float64)
    self.counts = torch.zeros(num_classes, dtype=torch.float64)

  def mean_vectors(self, feat, logits, labels=None):
    """[(class id, mean feature)] per image then class: pixels predicted (and labelled) so."""
    pred = torch.nn.functional.one_hot(logits.argmax(1), self.num_classes).permute(0, 3, 1, 2)
    if labels is not None:
      onehot = torch.zeros_like(pred)
      for c in range(self.num_classes):
        onehot[:, c] = labels == c
      pred = pred * onehot
    pred = pred.to(feat.dtype)
    out = []
    for n in range(feat.shape[0]):
      for t in range(self.num_classes):
        if pred[n, t].sum() < 5:
          continue
        out.append((t, (feat[n] * pred[n, t]).sum(dim=(1, 2)) / pred[n, t].sum()))
    return out

  def update(self, class_id, vector, mode, start_mean=False):
    if vector.sum().item() == 0:
      return
    if start_mean and self.counts[class_id] < 100:
      mode = 'mean'
    if mode == 'moving_average':
      self.vectors[class_id] = (self.vectors[class_id] * (1 - self.momentum)
                                + self.momentum * vector)
    else:
      self.vectors[class_id] = ((self.vectors[class_id] * self.counts[class_id] + vector)
                                / (self.counts[class_id] + 1))
    self.counts[class_id] = min(self.counts[class_id] + 1, 3000)

  def centroid_weight(self, feat):
    """softmax over classes of minus the L2 distance of each pixel's feature to each centroid."""
    dist = torch.stack([torch.norm(feat - self.vectors[k][None, :, None, None], dim=1)
                        for k in range(self.num_classes)], dim=1)
    return torch.softmax(-dist, dim=1)
