"""PyTorch reference of MuHDi's distillation terms, written from method.md §7.2 (NCHW).

`features_distillation` follows the official 'local' POD with 'pow' pre-processing and the
Frobenius difference; `kl_divergence` and `mse_loss` are the official helpers' formulas on
`[N, C, H, W]` logits (first argument: student, second: target). Every function returns a 0-d
tensor that back-propagates like the released code.
"""

import warnings

import torch
import torch.nn.functional as F


def local_pod(x: torch.Tensor, scales=(1, 2, 4)) -> torch.Tensor:
  """`[N, C, H, W]` map (already pre-processed) -> `[N, D]` embedding, cell by cell."""
  n, _, h, w = x.shape
  emb = []
  for scale in scales:
    kh, kw = h // scale, w // scale
    for i in range(scale):
      for j in range(scale):
        cell = x[..., i * kh:(i + 1) * kh, j * kw:(j + 1) * kw]
        if any(s == 0 for s in cell.shape):
          continue
        emb.append(cell.mean(dim=3).reshape(n, -1))  # Width-pooled: [N, C * kh].
        emb.append(cell.mean(dim=2).reshape(n, -1))  # Height-pooled: [N, C * kw].
  return torch.cat(emb, dim=1)


def features_distillation(old_maps, new_maps, scales=(1, 2, 4)) -> torch.Tensor:
  """Mean over layers of the batch-mean L2 distance of the squared maps' POD embeddings."""
  loss = torch.zeros(())
  for a, b in zip(old_maps, new_maps):
    a = local_pod(torch.pow(a, 2), scales)
    b = local_pod(torch.pow(b, 2), scales)
    loss = loss + torch.linalg.vector_norm(a - b, dim=-1).mean()
  return loss / len(old_maps)


def kl_divergence(predict_0: torch.Tensor, predict_1: torch.Tensor) -> torch.Tensor:
  """`F.kl_div(log_softmax(p0), softmax(p1))`, mean over all N*C*H*W elements."""
  c = predict_0.shape[1]
  p0 = predict_0.permute(0, 2, 3, 1).reshape(-1, c)
  p1 = predict_1.permute(0, 2, 3, 1).reshape(-1, c)
  with warnings.catch_warnings():
    # Torch warns that reduction='mean' also divides by C: that is the released behaviour.
    warnings.simplefilter('ignore', UserWarning)
    return F.kl_div(F.log_softmax(p0, dim=1), F.softmax(p1, dim=1), reduction='mean')


def mse_loss(predict_0: torch.Tensor, predict_1: torch.Tensor) -> torch.Tensor:
  """`F.mse_loss(softmax(p0), softmax(p1))`, mean over all elements."""
  return F.mse_loss(F.softmax(predict_0, dim=1), F.softmax(predict_1, dim=1))
