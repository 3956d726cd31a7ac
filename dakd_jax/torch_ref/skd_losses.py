"""PyTorch references of SKD's losses, written from method.md §5.2 (NCHW, any float dtype)."""

import torch
import torch.nn.functional as F


def pixelwise_distillation(student_logits, teacher_logits):
  """Sum of -softmax(T) * log_softmax(S) over the batch, pixels and classes, / (H' W')."""
  h, w = student_logits.shape[2:]
  teacher = F.softmax(teacher_logits.detach(), dim=1)
  return torch.sum(-teacher * F.log_softmax(student_logits, dim=1)) / h / w


def _similarity(features):
  norm = (features ** 2).sum(dim=1, keepdim=True).sqrt().detach() + 1e-8
  flat = (features / norm).reshape(features.shape[0], features.shape[1], -1)
  return torch.einsum('icm,icn->imn', flat, flat)


def pairwise_distillation(student_features, teacher_features, scale=0.5):
  """Ceil-mode max-pool nodes (kernel = stride = int(scale * size)), cosine affinities,
  sum of squared differences / nodes^2 / N."""
  h, w = teacher_features.shape[2:]
  pool = torch.nn.MaxPool2d((int(h * scale), int(w * scale)), (int(h * scale), int(w * scale)),
                            padding=0, ceil_mode=True)
  student, teacher = pool(student_features), pool(teacher_features.detach())
  nodes = teacher.shape[2] * teacher.shape[3]
  diff = (_similarity(teacher) - _similarity(student)) ** 2
  return (diff / nodes ** 2 / teacher.shape[0]).sum()


def critic_loss(d_real, d_fake, kind='wgan-gp'):
  if kind == 'hinge':
    return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
  return -d_real.mean() + d_fake.mean()


def generator_loss(d_fake):
  return -d_fake.mean()


def gradient_penalty(critic, real, fake, alpha):
  """WGAN-GP with per-sample `alpha` [N]: mean((||grad critic(x_hat)||_2 - 1)^2), graph kept
  for the double backward."""
  alpha = alpha.view(-1, 1, 1, 1).expand_as(real)
  x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
  out = critic(x_hat)
  grad = torch.autograd.grad(out, x_hat, grad_outputs=torch.ones_like(out), create_graph=True)[0]
  norm = grad.reshape(grad.shape[0], -1).pow(2).sum(dim=1).sqrt()
  return ((norm - 1) ** 2).mean()
