"""PyTorch reference of ``dakd_jax.losses``, written from the spec with the official functionals.

Same function names and keyword defaults as the JAX module, but tensors are NCHW (labels
``[N, H, W]`` int64, discriminator outputs ``[N, 1, h, w]``). Used by the JAX-vs-PyTorch parity
tests; every function returns a 0-d tensor that back-propagates like the released code.
"""

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_LABEL = 255
_ENTROPY_EPS = 1e-30


class _ReplaceValue(torch.autograd.Function):
  """Returns ``value`` forward but sends the incoming gradient to ``grad_source`` unchanged."""

  @staticmethod
  def forward(ctx, grad_source: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    del ctx, grad_source
    return value.detach().clone()

  @staticmethod
  def backward(ctx, grad: torch.Tensor):
    del ctx
    return grad, None


def segmentation_cross_entropy(logits: torch.Tensor,
                               labels: torch.Tensor,
                               ignore_label: int = IGNORE_LABEL) -> torch.Tensor:
  """``CrossEntropy2d``: logits ``[N, C, H, W]``, labels ``[N, H, W]``; mean over valid pixels.

  Pixels labelled ``ignore_label`` or outside ``[0, C)`` are dropped before
  ``F.cross_entropy`` (like the official helper); no valid pixel gives 0 with zero gradient.
  """
  num_classes = logits.shape[1]
  valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_label)
  if not bool(valid.any()):
    return logits.sum() * 0.0
  predict = logits.permute(0, 2, 3, 1)[valid]
  return F.cross_entropy(predict, labels[valid].long())


def adversarial_loss(d_logits: torch.Tensor, target: float, gan: str = 'bce') -> torch.Tensor:
  """``BCEWithLogitsLoss`` (``'bce'``) or ``MSELoss`` (``'lsgan'``) to a constant label, mean."""
  label = torch.full_like(d_logits, float(target))
  if gan == 'bce':
    return nn.BCEWithLogitsLoss()(d_logits, label)
  if gan == 'lsgan':
    return nn.MSELoss()(d_logits, label)
  raise ValueError(f"adversarial_loss: gan must be 'bce' or 'lsgan', got {gan!r}.")


def kl_distillation(student_logits: torch.Tensor,
                    teacher_logits: torch.Tensor,
                    mode: str = 'paper') -> torch.Tensor:
  """KL distillation on ``[N, C, H, W]`` logits; modes as in ``dakd_jax.losses.kl_distillation``.

  * ``'paper'``: ``F.kl_div(log_s, log_t, log_target=True)`` summed over classes, mean over
    pixels.
  * ``'legacy_zero'``: torch <= 1.10's ``kl_div`` formula, ``target * (log target - input)`` where
    ``target > 0`` else 0, mean over all elements, applied to the released code's log-prob target.
  * ``'modern_surrogate'``: the released ``nn.KLDivLoss()(log_s, log_t)`` supplies the gradient;
    its NaN value is replaced by the finite surrogate ``mean(-log_t * log_s)``.
  """
  log_s = F.log_softmax(student_logits, dim=1)
  log_t = F.log_softmax(teacher_logits.detach(), dim=1)
  if mode == 'paper':
    num_pixels = log_s.numel() // log_s.shape[1]
    return F.kl_div(log_s, log_t, reduction='sum', log_target=True) / num_pixels
  if mode == 'legacy_zero':
    target = log_t
    elementwise = torch.where(target > 0, target * (torch.log(target) - log_s),
                              torch.zeros_like(log_s))
    return elementwise.mean()
  if mode == 'modern_surrogate':
    with warnings.catch_warnings():
      # Torch warns that reduction='mean' also divides by C: that is the released behaviour.
      warnings.simplefilter('ignore', UserWarning)
      released = nn.KLDivLoss()(log_s, log_t)
    return _ReplaceValue.apply(released, (-log_t * log_s).mean())
  raise ValueError(f'kl_distillation: unknown mode {mode!r}.')


def mse_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
  """``nn.MSELoss()`` to the detached teacher, mean over all elements."""
  return nn.MSELoss()(student, teacher.detach())


def pseudo_label_cross_entropy(student_logits: torch.Tensor,
                               teacher_logits: torch.Tensor,
                               threshold: float = 0.0) -> torch.Tensor:
  """CE of ``[N, C, H, W]`` student logits against the teacher argmax (low-confidence ignored)."""
  confidence, labels = F.softmax(teacher_logits.detach(), dim=1).max(dim=1)
  labels = torch.where(confidence >= threshold, labels, torch.full_like(labels, IGNORE_LABEL))
  return segmentation_cross_entropy(student_logits, labels)


def self_information(probs: torch.Tensor) -> torch.Tensor:
  """ADVENT ``prob_2_entropy``: ``-p * log2(p + 1e-30) / log2(C)`` on ``[N, C, H, W]``."""
  return -probs * torch.log2(probs + _ENTROPY_EPS) / math.log2(probs.shape[1])


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
  """ADVENT ``entropy_loss`` on ``softmax(logits)``: sum / (N * H * W * log2 C)."""
  probs = F.softmax(logits, dim=1)
  n, c, h, w = probs.shape
  return -torch.sum(probs * torch.log2(probs + _ENTROPY_EPS)) / (n * h * w * math.log2(c))

