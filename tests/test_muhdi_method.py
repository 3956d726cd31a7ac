"""The MuHDi method's loss terms on fixed outputs: each term and its official weight against the
PyTorch reference, which heads each term reaches, options and registration; one generic step."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dakd_jax import errors
from dakd_jax import methods
from dakd_jax import steps
from dakd_jax.methods import base
from dakd_jax.models import layers
from dakd_jax.state import create_train_state

N, H, W, C = 2, 16, 32, 7
HEADS = ('aux', 'main', 'aux_specialist', 'main_specialist')
ATTENTION_SHAPES = ((N, 4, 8, 3), (N, 2, 4, 5), (N, 2, 4, 6), (N, 2, 4, 8))


def _outputs(seed):
  """A domain's outputs as the step hands them over: stride-8 logits, upsampled, attentions."""
  keys = iter(jax.random.split(jax.random.PRNGKey(seed), 8))
  raw = {k: 2 * jax.random.normal(next(keys), (N, H // 8, W // 8, C)) for k in HEADS}
  raw['attentions'] = [jax.nn.relu(jax.random.normal(next(keys), s)) for s in ATTENTION_SHAPES]
  return base.at_input_size(raw, (H, W))


def _setup():
  outputs = {'source': _outputs(0), 'target': _outputs(1)}
  previous = _outputs(2)
  previous = {k: previous[k] for k in ('aux', 'main', 'attentions', base.STRIDE8_KEY)}
  labels = jax.random.randint(jax.random.PRNGKey(3), (N, H, W), 0, C)
  labels = labels.at[:, :2].set(255)
  batch = {'source_label': labels}
  # A fixed linear "discriminator": patch logits from the entropy map.
  players = {name: (lambda x, s=s: jnp.sum(x, axis=-1, keepdims=True) * s - 0.3)
             for name, s in (('disc_aux', 1.5), ('disc_main', -2.0))}
  return outputs, previous, batch, players


def _t(torch, a):
  return torch.tensor(np.asarray(a, np.float64).transpose(0, 3, 1, 2))


@pytest.mark.slow  # Compiles the terms and runs the torch reference: ~5 s.
@pytest.mark.parametrize('teacher_loss', ['kl', 'mse'])
def test_terms_match_the_official_formulas(torch, teacher_loss):
  from dakd_jax.torch_ref import losses as RL  # pylint: disable=g-import-not-at-top
  from dakd_jax.torch_ref import muhdi_losses as RM  # pylint: disable=g-import-not-at-top
  outputs, previous, batch, players = _setup()
  method = methods.create('muhdi', {'teacher_loss': teacher_loss})
  terms, player_inputs = jax.jit(
      lambda o, p: method.network_terms(o, batch, players, p))(outputs, previous)
  src, tgt = outputs['source'], outputs['target']
  labels = torch.tensor(np.asarray(batch['source_label']), dtype=torch.long)
  teacher = {'kl': RM.kl_divergence, 'mse': RM.mse_loss}[teacher_loss]

  def adv(level, scale):
    probs = torch.softmax(_t(torch, tgt[f'{level}_specialist']), dim=1)
    d = RL.self_information(probs).sum(dim=1, keepdim=True) * scale - 0.3
    return RL.adversarial_loss(d, 0.0)

  expected = {
      'src/seg_main': RL.segmentation_cross_entropy(_t(torch, src['main_specialist']), labels),
      'src/seg_aux': 0.1 * RL.segmentation_cross_entropy(_t(torch, src['aux_specialist']),
                                                         labels),
      'src/pod': 1e-5 * RM.features_distillation(
          [_t(torch, a) for a in previous['attentions']],
          [_t(torch, a) for a in src['attentions']]),
      'src/kt_main': 1e-5 * RM.kl_divergence(_t(torch, src['stride8']['main']),
                                             _t(torch, previous['stride8']['main'])),
      'src/kt_aux': 1e-5 * 0.1 * RM.kl_divergence(_t(torch, src['stride8']['aux']),
                                                  _t(torch, previous['stride8']['aux'])),
      'tgt/adv_aux': 2e-4 * adv('aux', 1.5),
      'tgt/adv_main': 1e-3 * adv('main', -2.0),
      'tgt/kt_main': teacher(_t(torch, tgt['main']), _t(torch, tgt['main_specialist'])),
      'tgt/kt_aux': 0.1 * teacher(_t(torch, tgt['aux']), _t(torch, tgt['aux_specialist'])),
  }
  assert set(terms) == set(expected)
  for key, want in expected.items():
    np.testing.assert_allclose(terms[key], want.item(), rtol=2e-5, err_msg=key)
  # The discriminators see the specialist heads' entropy maps, source then target.
  src_in, tgt_in = player_inputs['disc_main']
  np.testing.assert_allclose(
      tgt_in, RL.self_information(torch.softmax(_t(torch, tgt['main_specialist']), 1))
      .numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-7)
  assert src_in.shape == (N, H, W, C)


@pytest.mark.slow  # Compiles the Jacobian of every term: ~6 s.
def test_each_term_reaches_only_its_heads():
  """CE and adversarial terms train the specialists; the distillation terms the agnostic heads
  (the specialists are the gradient-stopped teachers of the target terms)."""
  outputs, previous, batch, players = _setup()
  method = methods.create('muhdi', {})

  jacobian = jax.jit(jax.jacrev(
      lambda outs: method.network_terms(outs, batch, players, previous)[0]))(outputs)

  def term(name):
    grads = jacobian[name]
    return {k for domain in ('source', 'target') for k in HEADS
            if np.any(np.asarray(grads[domain][k]) != 0)
            or np.any(np.asarray(grads[domain][base.STRIDE8_KEY][k]) != 0)}

  assert term('src/seg_main') == {'main_specialist'}
  assert term('tgt/adv_aux') == {'aux_specialist'}
  assert term('src/kt_main') == {'main'}
  assert term('tgt/kt_aux') == {'aux'}
  assert term('src/pod') == set()  # Attentions only.


def test_options_and_registration():
  method = methods.create('muhdi', {'pod_scales': [1, 2]})
  assert method.pod_scales == (1, 2) and method.frozen == ('previous',)
  assert len(method.players(7)) == 2
  defaults = methods.default_options('muhdi')
  assert (defaults['lambda_feat'], defaults['lambda_kt'], defaults['lambda_kt_target'],
          defaults['lambda_adv_main'], defaults['lambda_adv_aux']) == (1e-5, 1e-5, 1.0, 1e-3,
                                                                       2e-4)
  with pytest.raises(errors.UserError, match='teacher_loss'):
    methods.create('muhdi', {'teacher_loss': 'l1'})


class _TinyMuHDi(nn.Module):
  """MuHDi's output structure on a tiny network: four stages (strides 2, 4, 8, 8), agnostic and
  specialist 1x1 heads on stages 3 and 4; `specialist=False` is the 2-head previous model."""
  specialist: bool = True
  return_features: bool = False

  @nn.compact
  def __call__(self, x, train=False):
    stages = []
    for i, stride in enumerate((2, 2, 2, 1)):
      x = nn.Conv(4 + i, (3, 3), strides=stride, name=f'layer{i + 1}')(x)
      x = nn.relu(layers.BatchNorm(name=f'bn{i + 1}')(x, train))
      stages.append(x)
    heads = {'aux': stages[2], 'main': stages[3]}
    if self.specialist:
      heads.update({'aux_specialist': stages[2], 'main_specialist': stages[3]})
    out = {k: nn.Conv(C, (1, 1), name=f'{k}_head')(v) for k, v in heads.items()}
    if self.specialist or self.return_features:
      out['attentions'] = stages
    return out


@pytest.mark.slow  # Compiles a whole training step (tiny networks): ~10 s.
def test_generic_step_trains_muhdi_heads_and_discriminators():
  """The one generic step with the MuHDi method: every term finite, the previous model frozen,
  agnostic and specialist heads and both discriminators updated."""
  method = methods.create('muhdi', {'ndf': 4, 'lambda_feat': 1.0, 'lambda_kt': 1.0,
                                   'pod_scales': (1, 2)})  # Fewer cells: faster compile.
  network, previous = _TinyMuHDi(), _TinyMuHDi(specialist=False)
  x = jnp.zeros((1, 32, 64, 3))  # The discriminators need 32x64.
  net_vars = network.init(jax.random.PRNGKey(0), x)
  prev_vars = previous.init(jax.random.PRNGKey(1), x)
  players = method.players(C)
  player_vars = {name: p.module.init(jax.random.PRNGKey(2), jnp.zeros((1, 32, 64, C)))
                 for name, p in players.items()}
  tx = optax.sgd(0.1)
  program = steps.StepProgram(method=method, network=network, network_tx=tx, players=players,
                              player_txs={k: optax.adam(1e-3) for k in players},
                              frozen={'previous': previous})
  state = create_train_state(net_vars, player_vars, tx, {k: optax.adam(1e-3) for k in players},
                             jax.random.PRNGKey(3))
  keys = jax.random.split(jax.random.PRNGKey(4), 3)
  batch = {'source_image': jax.random.normal(keys[0], (2, 32, 64, 3)),
           'target_image': jax.random.normal(keys[1], (2, 32, 64, 3)),
           'source_label': jax.random.randint(keys[2], (2, 32, 64), 0, C)}
  new, metrics = jax.jit(functools.partial(steps.train_step, program=program))(
      state, batch, {'previous': prev_vars})
  expected = {'src/seg_main', 'src/seg_aux', 'src/pod', 'src/kt_main', 'src/kt_aux',
              'tgt/adv_aux', 'tgt/adv_main', 'tgt/kt_main', 'tgt/kt_aux'}
  assert expected | {'total', 'disc_aux', 'disc_main'} <= {
      k[len('loss/'):] for k in metrics if k.startswith('loss/')}
  assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
  assert float(metrics['loss/src/pod']) > 0 and float(metrics['loss/src/kt_main']) > 0
  for head in ('aux_head', 'main_head', 'aux_specialist_head', 'main_specialist_head'):
    assert not np.allclose(new.network.params[head]['kernel'],
                           state.network.params[head]['kernel']), head
  for name in players:
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), new.players[name].params,
                           state.players[name].params)
    assert all(jax.tree.leaves(changed)), name
