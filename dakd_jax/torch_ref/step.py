"""PyTorch reference of the DAKD training step (`dakd_jax.steps.train_step`), written from the spec.

One `TorchTrainer.step(batch)` is one official iteration (method.md §1.2, §4.3, §4.4):
  1. frozen teacher forward on the domains that are distilled (eval-mode BN by default);
  2. student forward on the source batch, then on the target batch (BN running statistics are
     updated in that order), logits upsampled with align-corners bilinear to the input size;
  3. generator backward: segmentation + distillation + adversarial terms, the adversarial ones
     through discriminators whose parameters are frozen for this backward only;
  4. discriminator backward on detached predictions of both domains;
  5. poly learning rates set for iteration `i`, then the G, D-aux and D-main optimisers step, so
     both gradients come from the pre-update weights.
Loss terms, their names and weights are those of the JAX step: the same method object
(`dakd_jax.methods`: source-only, AdaptSegNet, ADVENT, MinEnt, or DAKD over one of them) drives
both, with the PyTorch losses of `torch_ref.losses` (paper KL by default, the released code's KL
as an option through `kl_mode`). Tensors are NCHW; `prepare_batch` converts the JAX step's NHWC NumPy
batches.

`TorchForm` selects the execution form used by speed comparisons: fp32 eager (as the official
scripts run) or channels_last / autocast (bf16, fp16 with a GradScaler) / `torch.compile`.
"""

import contextlib
import dataclasses
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from dakd_jax import methods
from dakd_jax.methods.adaptsegnet import AdaptSegNet
from dakd_jax.methods.advent import Advent
from dakd_jax.methods.dakd import DAKD
from dakd_jax.methods.minent import MinEnt
from dakd_jax.torch_ref import losses
from dakd_jax.torch_ref import models

# Top-level torch modules trained with `head_lr_mult`: DRN `seg1`/`seg2`, DeepLab `layer5`/`layer6`.
TORCH_HEAD_MODULES = ('seg1', 'seg2', 'layer5', 'layer6')
_AMP_DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16}


@dataclasses.dataclass(frozen=True)
class TorchForm:
  """How the PyTorch step executes (numerics are fp32 eager unless `amp` is set).

  Attributes:
    channels_last: NHWC memory format for the networks and their inputs.
    amp: None, 'bfloat16' or 'float16' autocast for the network forwards (losses stay fp32;
      float16 adds a GradScaler).
    compile: wrap the networks in `torch.compile`.
  """
  channels_last: bool = False
  amp: Optional[str] = None
  compile: bool = False

  def __post_init__(self):
    if self.amp is not None and self.amp not in _AMP_DTYPES:
      raise ValueError(f'TorchForm.amp: expected None or one of {sorted(_AMP_DTYPES)}, '
                       f'got {self.amp!r}')

  def describe(self) -> str:
    parts = [f'amp {self.amp}' if self.amp else 'fp32']
    parts += ['channels_last'] if self.channels_last else []
    parts += ['torch.compile'] if self.compile else ['eager']
    return ' + '.join(parts)


def poly_lr(base_lr: float, step: int, num_steps: int, power: float) -> float:
  """`base_lr * (1 - step / num_steps) ** power`, 0 from `num_steps` on (optax's schedule)."""
  return base_lr * (1.0 - min(step, num_steps) / num_steps) ** power


def _outputs(model: nn.Module, forward, images: torch.Tensor,
             with_features: bool) -> Dict[str, torch.Tensor]:
  """{'aux', 'main'} stride-8 logits (plus tapped features for DRN when asked), NCHW."""
  if not with_features:
    aux, main = forward(images)
    return {'aux': aux, 'main': main}
  if not isinstance(model, models.DRNSeg):
    raise ValueError(f"mse_on='features' needs a DRN network in the torch reference, got "
                     f'{type(model).__name__}')
  taps = model.base(images)
  aux_features, main_features = taps[model.aux_tap], taps['layer8']
  return {'aux': model.seg2(aux_features), 'main': model.seg1(main_features),
          'aux_features': aux_features, 'main_features': main_features}


def _upsampled(outputs: Dict[str, torch.Tensor], size) -> Dict[str, torch.Tensor]:
  """Logits -> float32 at the input size (align_corners=True); features -> float32 as they are."""
  return {k: (F.interpolate(v.float(), size=tuple(size), mode='bilinear', align_corners=True)
              if k in ('aux', 'main') else v.float()) for k, v in outputs.items()}


def distillation_terms(student: Dict[str, torch.Tensor], teacher: Dict[str, torch.Tensor],
                       method: DAKD, scale: float) -> Dict[str, torch.Tensor]:
  """Weighted KL, MSE and pseudo-label CE of one domain (the JAX step's terms and names)."""
  terms = {}
  if method.lambda_kl:
    terms['kl_main'] = scale * method.lambda_kl * losses.kl_distillation(
        student['main'], teacher['main'], mode=method.kl_mode)
    terms['kl_aux'] = scale * method.lambda_kl * method.kl_aux_factor * losses.kl_distillation(
        student['aux'], teacher['aux'], mode=method.kl_mode)
  if method.lambda_mse:
    if method.mse_on == 'features':
      s_feat, t_feat = student['aux_features'], teacher['aux_features']
      if s_feat.shape[2:] != t_feat.shape[2:]:
        t_feat = F.interpolate(t_feat, size=s_feat.shape[2:], mode='bilinear',
                               align_corners=True)
      terms['mse'] = scale * method.lambda_mse * losses.mse_distillation(s_feat, t_feat)
    else:
      terms['mse'] = scale * method.lambda_mse * losses.mse_distillation(
          F.log_softmax(student['aux'], dim=1), F.log_softmax(teacher['aux'], dim=1))
  if method.lambda_ce:
    terms['pseudo_ce'] = scale * method.lambda_ce * losses.pseudo_label_cross_entropy(
        student['main'], teacher['main'], threshold=method.pseudo_label_threshold)
  return terms


class TorchTrainer:
  """A segmentation network, its discriminators and their optimisers, an optional teacher.

  Args:
    student: segmentation network returning (aux, main) stride-8 logits (`torch_ref.models`).
    discriminators: `{'disc_aux', 'disc_main'}` FCDiscriminators when the method adapts
      adversarially, else `{}`.
    method: the stage's method (`dakd_jax.methods`), shared with the JAX step.
    optim: the stage's `optim.OptimSpec`.
    schedule_steps: horizon of the poly schedules.
    freeze_bn_affine: the network's option: BN scale/bias out of the optimiser.
    teacher: frozen segmentation network (distillation) or None.
    form: execution form (`TorchForm`).
    device: torch device of everything.
  """

  def __init__(self, student: nn.Module, discriminators: Dict[str, nn.Module],
               method: methods.Method, optim: Any, schedule_steps: int,
               freeze_bn_affine: bool = False, teacher: Optional[nn.Module] = None,
               form: TorchForm = TorchForm(), device: str = 'cpu'):
    self.distill = method if isinstance(method, DAKD) else None
    self.adaptation = method.adaptation if self.distill else method
    if self.distill and teacher is None:
      raise ValueError('TorchTrainer: a distillation method needs a teacher network')
    self.method, self.optim, self.schedule_steps = method, optim, schedule_steps
    self.form, self.device = form, torch.device(device)
    self.iteration = 0
    memory = torch.channels_last if form.channels_last else torch.contiguous_format
    self.student = student.to(self.device, memory_format=memory).train()
    self.discs = {k: d.to(self.device, memory_format=memory) for k, d in discriminators.items()}
    self.teacher = None
    if teacher is not None:
      self.teacher = teacher.to(self.device, memory_format=memory)
      self.teacher.train(self.distill.teacher_bn == 'train')
      self.teacher.requires_grad_(False)
    if freeze_bn_affine:  # Excluded from the optimiser, as AdaptSegNet does.
      for m in self.student.modules():
        if isinstance(m, nn.BatchNorm2d):
          m.requires_grad_(False)
    wrap = torch.compile if form.compile else (lambda m: m)
    self._student_fwd = wrap(self.student)
    self._teacher_fwd = wrap(self.teacher) if self.teacher is not None else None
    self._disc_fwd = {k: wrap(d) for k, d in self.discs.items()}

    body, head = [], []
    for name, p in self.student.named_parameters():
      if p.requires_grad:
        (head if name.split('.')[0] in TORCH_HEAD_MODULES else body).append(p)
    groups = [{'params': body, 'lr_mult': 1.0}]
    if head:
      groups.append({'params': head, 'lr_mult': optim.head_lr_mult})
    self.student_opt = torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum,
                                       weight_decay=optim.weight_decay)
    self.disc_opts = {k: torch.optim.Adam(d.parameters(), lr=optim.d_lr, betas=(0.9, 0.99),
                                          eps=1e-8) for k, d in self.discs.items()}
    self.scaler = (torch.amp.GradScaler(self.device.type) if form.amp == 'float16' else None)

  def _autocast(self):
    if self.form.amp is None:
      return contextlib.nullcontext()
    return torch.autocast(self.device.type, dtype=_AMP_DTYPES[self.form.amp])

  def prepare_batch(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """JAX-layout NumPy batch -> device tensors: NCHW float32 images, int64 `[N, H, W]` labels.

    Images get the form's memory format. Kept out of `step` so that timings exclude the copy.
    """
    memory = torch.channels_last if self.form.channels_last else torch.contiguous_format
    image = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).to(
        self.device, torch.float32).contiguous(memory_format=memory)
    out = {'source_image': image(batch['source_image']),
           'source_label': torch.from_numpy(batch['source_label']).to(self.device, torch.int64)}
    if 'target_image' in batch:
      out['target_image'] = image(batch['target_image'])
    return out

  def _teacher_outputs(self, images):
    with torch.no_grad(), self._autocast():
      outputs = _outputs(self.teacher, self._teacher_fwd, images, self.method.needs_features)
    return _upsampled(outputs, images.shape[2:])

  def _student_outputs(self, images):
    with self._autocast():
      outputs = _outputs(self.student, self._student_fwd, images, self.method.needs_features)
    return _upsampled(outputs, images.shape[2:])

  def _discriminate(self, level, probs):
    memory = torch.channels_last if self.form.channels_last else torch.contiguous_format
    with self._autocast():
      return self._disc_fwd[f'disc_{level}'](probs.contiguous(memory_format=memory)).float()

  def _disc_input(self, logits):
    probs = F.softmax(logits, dim=1)
    return losses.self_information(probs) if isinstance(self.adaptation, Advent) else probs

  def _generator_loss(self, batch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], Dict]:
    a = self.adaptation
    scales = self.distill.scales if self.distill else {}
    teacher = {d: self._teacher_outputs(batch[f'{d}_image']) for d, s in scales.items() if s}
    labels = batch['source_label']
    src = self._student_outputs(batch['source_image'])
    terms = {'src/seg_main': losses.segmentation_cross_entropy(src['main'], labels),
             'src/seg_aux': a.lambda_seg_aux * losses.segmentation_cross_entropy(src['aux'],
                                                                                 labels)}
    if scales.get('source'):
      terms.update({f'src/{k}': v for k, v in distillation_terms(
          src, teacher['source'], self.distill, scales['source']).items()})
    predictions = {}
    if self.method.uses_target:
      tgt = self._student_outputs(batch['target_image'])
    if isinstance(a, AdaptSegNet):
      for level, lam in (('aux', a.lambda_adv_aux), ('main', a.lambda_adv_main)):
        d_in_tgt = self._disc_input(tgt[level])
        # Fool the discriminator: target predictions labelled as source (0).
        terms[f'tgt/adv_{level}'] = lam * losses.adversarial_loss(
            self._discriminate(level, d_in_tgt), 0.0, gan=a.gan)
        predictions[level] = (self._disc_input(src[level]).detach(), d_in_tgt.detach())
    if isinstance(a, MinEnt):
      terms['tgt/ent_aux'] = a.lambda_ent_aux * losses.entropy_loss(tgt['aux'])
      terms['tgt/ent_main'] = a.lambda_ent_main * losses.entropy_loss(tgt['main'])
    if scales.get('target'):
      terms.update({f'tgt/{k}': v for k, v in distillation_terms(
          tgt, teacher['target'], self.distill, scales['target']).items()})
    return sum(terms.values()), terms, predictions

  def _set_learning_rates(self):
    o, i = self.optim, self.iteration
    lr = poly_lr(o.lr, i, self.schedule_steps, o.power)
    for group in self.student_opt.param_groups:
      group['lr'] = lr * group['lr_mult']
    for opt in self.disc_opts.values():
      for group in opt.param_groups:
        group['lr'] = poly_lr(o.d_lr, i, self.schedule_steps, o.power)

  def _backward(self, loss):
    (self.scaler.scale(loss) if self.scaler else loss).backward()

  def step(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """One iteration on a `prepare_batch` output.

    Returns detached 0-d tensors named like the JAX step's metrics ('loss/total',
    'loss/src/seg_main', ..., 'loss/disc_aux', 'loss/disc_main').
    """
    self.student_opt.zero_grad(set_to_none=True)
    for opt in self.disc_opts.values():
      opt.zero_grad(set_to_none=True)
    for d in self.discs.values():  # Frozen for the generator's backward only.
      d.requires_grad_(False)
    total, terms, predictions = self._generator_loss(batch)
    self._backward(total)
    for d in self.discs.values():
      d.requires_grad_(True)
    metrics = {'loss/total': total.detach(), **{f'loss/{k}': v.detach() for k, v in terms.items()}}
    for level, (src_pred, tgt_pred) in predictions.items():
      gan = self.adaptation.gan
      d_loss = 0.5 * (losses.adversarial_loss(self._discriminate(level, src_pred), 0.0, gan=gan)
                      + losses.adversarial_loss(self._discriminate(level, tgt_pred), 1.0, gan=gan))
      self._backward(d_loss)
      metrics[f'loss/disc_{level}'] = d_loss.detach()

    self._set_learning_rates()
    for opt in [self.student_opt] + list(self.disc_opts.values()):
      if self.scaler:
        self.scaler.step(opt)
      else:
        opt.step()
    if self.scaler:
      self.scaler.update()
    self.iteration += 1
    return metrics
