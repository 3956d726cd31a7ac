"""The training step: generator (segmentation network) and discriminator updates, as pure functions.

Update order (AdaptSegNet / DAKD official code, `method.md` §1.2): the generator gradient is taken
through the *current* discriminators, the discriminator gradients on stopped-gradient predictions of
the *current* generator; then all three optimisers step. Both gradients therefore come from the
pre-update weights. This is neither MAGVIT's single-VJP simultaneous game on shared outputs nor an
alternating G-then-D step on updated weights: it is the official order, which `train_step` keeps.

Shapes: images `[N, H, W, 3]` float32 (normalised), labels `[N, H, W]` int32 (255 = ignore),
logits `[N, H, W, C]` after align-corners upsampling to the input size, as the losses are computed
at input resolution in every official script.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from dakd_jax import losses
from dakd_jax.models.layers import resize_align_corners
from dakd_jax.state import TrainState


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """Static loss configuration of one stage (which terms exist, and their weights).

  `distill_source` / `distill_target` scale every distillation term on that domain; a zero weight
  removes the terms from the graph, so each paradigm computes exactly its own losses.
  """
  seg_aux: float = 0.1
  adv_aux: float = 2e-4
  adv_main: float = 1e-3
  gan: str = 'bce'
  adversarial: bool = True  # False for the source-only baseline (no discriminators involved).
  disc_input: str = 'softmax'  # 'softmax' (AdaptSegNet/DAKD) | 'self_information' (ADVENT).
  distill_source: float = 0.0
  distill_target: float = 0.0
  kl: float = 0.1
  kl_aux_factor: float = 0.1
  kl_mode: str = 'paper'
  mse: float = 0.01
  mse_on: str = 'aux_logprobs'
  ce: float = 1.0
  pseudo_label_threshold: float = 0.0
  teacher_bn_train: bool = False

  @property
  def distills(self):
    return self.distill_source > 0 or self.distill_target > 0


def loss_weights_from_config(config, mode):
  """Builds the `LossWeights` of an `adapt` or `distill` stage from the config."""
  adapt, d = config.adapt, config.distill
  weights = dict(
      seg_aux=adapt.lambda_seg_aux, adv_aux=adapt.lambda_adv_aux, adv_main=adapt.lambda_adv_main,
      gan=adapt.gan, adversarial=adapt.method != 'source_only',
      disc_input='self_information' if adapt.method == 'advent' else 'softmax')
  if mode == 'distill':
    paradigm = d.paradigm
    weights.update(
        distill_source=1.0 if paradigm in ('a', 'c') else 0.0,
        distill_target=d.gamma if paradigm in ('b', 'c', 'd') else 0.0,
        kl=d.lambda_kl, kl_aux_factor=d.kl_aux_factor, kl_mode=d.kl_mode, mse=d.lambda_mse,
        mse_on=d.mse_on, ce=d.lambda_ce, pseudo_label_threshold=d.pseudo_label_threshold,
        teacher_bn_train=d.teacher_bn == 'train')
  return LossWeights(**weights)


@dataclasses.dataclass(frozen=True)
class Networks:
  """The static half of a stage: modules and optimisers (not part of the state pytree)."""
  student: Any  # flax.linen.Module returning {'aux', 'main'} logits at stride 8.
  discriminator: Any  # flax.linen.Module, [N, H, W, C] -> [N, h, w, 1] logits.
  student_tx: optax.GradientTransformation
  disc_tx: optax.GradientTransformation
  teacher: Any = None  # flax.linen.Module or None outside distillation.
  learning_rates: Callable[[jax.Array], dict] | None = None  # step -> {name: lr} for logging.


def _upsampled(outputs, size):
  """Stride-8 logits (and optional features) -> float32 logits at the input size."""
  up = {k: resize_align_corners(outputs[k].astype(jnp.float32), size) for k in ('aux', 'main')}
  for k in ('aux_features', 'main_features'):
    if k in outputs:
      up[k] = outputs[k].astype(jnp.float32)
  return up


def _disc_input(logits, kind):
  probs = jax.nn.softmax(logits, axis=-1)
  return losses.self_information(probs) if kind == 'self_information' else probs


def teacher_outputs(networks, teacher_variables, images, weights):
  """Frozen-teacher logits at input size; no gradient ever reaches the teacher."""
  outputs = networks.teacher.apply(
      teacher_variables, images, train=weights.teacher_bn_train,
      mutable=['batch_stats'] if weights.teacher_bn_train else False,
      **({'return_features': True} if weights.mse_on == 'features' else {}))
  if weights.teacher_bn_train:
    outputs, _ = outputs  # Batch statistics only; the teacher's running stats are not updated.
  return jax.lax.stop_gradient(_upsampled(outputs, images.shape[1:3]))


def distillation_terms(student, teacher, weights, scale):
  """Weighted KL, MSE and pseudo-label CE between student and teacher outputs of one domain."""
  terms = {}
  if weights.kl:
    terms['kl_main'] = scale * weights.kl * losses.kl_distillation(
        student['main'], teacher['main'], mode=weights.kl_mode)
    terms['kl_aux'] = scale * weights.kl * weights.kl_aux_factor * losses.kl_distillation(
        student['aux'], teacher['aux'], mode=weights.kl_mode)
  if weights.mse:
    if weights.mse_on == 'features':
      s_feat, t_feat = student['aux_features'], teacher['aux_features']
      if s_feat.shape[1:3] != t_feat.shape[1:3]:
        t_feat = resize_align_corners(t_feat, s_feat.shape[1:3])
      terms['mse'] = scale * weights.mse * losses.mse_distillation(s_feat, t_feat)
    else:
      terms['mse'] = scale * weights.mse * losses.mse_distillation(
          jax.nn.log_softmax(student['aux']), jax.nn.log_softmax(teacher['aux']))
  if weights.ce:
    terms['pseudo_ce'] = scale * weights.ce * losses.pseudo_label_cross_entropy(
        student['main'], teacher['main'], threshold=weights.pseudo_label_threshold)
  return terms


def generator_loss(student_params, state, networks, weights, batch, teacher):
  """The segmentation network's loss and its weighted terms.

  Args:
    student_params: the differentiated parameters.
    state: the current `TrainState` (batch statistics and discriminators are read from it).
    networks: static modules.
    weights: static `LossWeights`.
    batch: `{'source_image', 'source_label', 'target_image'}`.
    teacher: `{'source': outputs, 'target': outputs}` upsampled teacher outputs (those needed).

  Returns:
    `(total, (terms, new_batch_stats, predictions))`: `terms` maps `'src/…'` / `'tgt/…'` names to
    weighted scalar contributions (they sum to `total`); `predictions` are the discriminator
    inputs of both domains at both levels, for the discriminator update.
  """
  feats = {'return_features': True} if weights.mse_on == 'features' and weights.distills else {}
  batch_stats = state.student.batch_stats

  def forward(images):
    nonlocal batch_stats
    variables = {'params': student_params, 'batch_stats': batch_stats}
    outputs, updates = networks.student.apply(
        variables, images, train=True, mutable=['batch_stats'], **feats)
    batch_stats = updates['batch_stats']  # Source then target, as two torch forwards would.
    return _upsampled(outputs, images.shape[1:3])

  src = forward(batch['source_image'])
  terms = {
      'src/seg_main': losses.segmentation_cross_entropy(src['main'], batch['source_label']),
      'src/seg_aux': weights.seg_aux * losses.segmentation_cross_entropy(
          src['aux'], batch['source_label']),
  }
  if weights.distill_source:
    terms.update({f'src/{k}': v for k, v in distillation_terms(
        src, teacher['source'], weights, weights.distill_source).items()})

  predictions = {}
  needs_target = weights.adversarial or weights.distill_target
  if needs_target:
    tgt = forward(batch['target_image'])
  if weights.adversarial:
    for level, disc, lam in (('aux', state.disc_aux, weights.adv_aux),
                             ('main', state.disc_main, weights.adv_main)):
      d_in_tgt = _disc_input(tgt[level], weights.disc_input)
      d_out = networks.discriminator.apply(disc.variables, d_in_tgt)
      # Fool the discriminator: target predictions labelled as source (0).
      terms[f'tgt/adv_{level}'] = lam * losses.adversarial_loss(d_out, 0.0, gan=weights.gan)
      predictions[level] = (_disc_input(src[level], weights.disc_input), d_in_tgt)
  if weights.distill_target:
    terms.update({f'tgt/{k}': v for k, v in distillation_terms(
        tgt, teacher['target'], weights, weights.distill_target).items()})
  total = sum(terms.values())
  return total, (terms, batch_stats, jax.lax.stop_gradient(predictions))


def discriminator_loss(disc_params, discriminator, source_pred, target_pred, gan):
  """½ BCE(D(source), 0) + ½ BCE(D(target), 1) on stopped-gradient predictions."""
  d_src = discriminator.apply({'params': disc_params}, source_pred)
  d_tgt = discriminator.apply({'params': disc_params}, target_pred)
  return 0.5 * (losses.adversarial_loss(d_src, 0.0, gan=gan)
                + losses.adversarial_loss(d_tgt, 1.0, gan=gan))


def _apply_updates(model_state, grads, tx, batch_stats=None):
  updates, opt_state = tx.update(grads, model_state.opt_state, model_state.params)
  return model_state.replace(
      params=optax.apply_updates(model_state.params, updates), opt_state=opt_state,
      batch_stats=model_state.batch_stats if batch_stats is None else batch_stats)


def train_step(state: TrainState, batch, teacher_variables, *, networks: Networks,
               weights: LossWeights):
  """One iteration: generator and discriminator gradients from the same weights, then updates.

  Args:
    state: replicated `TrainState` (donated by the jitted caller).
    batch: global arrays `{'source_image', 'source_label', 'target_image'}` sharded on the batch
      axis; BatchNorm statistics are over the global batch (sync BN).
    teacher_variables: frozen teacher `{'params', 'batch_stats'}` or None.
    networks, weights: static configuration (bound with `functools.partial` before `jax.jit`).

  Returns:
    `(new_state, metrics)`; metrics are device scalars (fetched by the loop only at log steps).
  """
  teacher = {}
  if weights.distill_source:
    teacher['source'] = teacher_outputs(networks, teacher_variables, batch['source_image'], weights)
  if weights.distill_target:
    teacher['target'] = teacher_outputs(networks, teacher_variables, batch['target_image'], weights)

  grad_fn = jax.value_and_grad(generator_loss, has_aux=True)
  (total, (terms, batch_stats, predictions)), grads = grad_fn(
      state.student.params, state, networks, weights, batch, teacher)
  metrics = {'loss/total': total, **{f'loss/{k}': v for k, v in terms.items()},
             'grad_norm/student': optax.global_norm(grads)}

  new_state = state.replace(
      student=_apply_updates(state.student, grads, networks.student_tx, batch_stats),
      step=state.step + 1)
  if weights.adversarial:
    for level in ('aux', 'main'):
      disc = getattr(state, f'disc_{level}')
      src_pred, tgt_pred = predictions[level]
      d_loss, d_grads = jax.value_and_grad(discriminator_loss)(
          disc.params, networks.discriminator, src_pred, tgt_pred, weights.gan)
      new_state = new_state.replace(
          **{f'disc_{level}': _apply_updates(disc, d_grads, networks.disc_tx)})
      metrics[f'loss/disc_{level}'] = d_loss
  if networks.learning_rates is not None:
    metrics.update({f'lr/{k}': v for k, v in networks.learning_rates(state.step).items()})
  return new_state, metrics
