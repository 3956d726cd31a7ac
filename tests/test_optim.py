"""Optimisers against torch.optim (SGD + coupled WD + poly lr, head x10, frozen BN, Adam), and the
parameter groups each network declares."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dakd_jax import models
from dakd_jax import optim

NUM_STEPS = 10
HEADS = ("seg_main", "seg_aux")


def _cfg(**overrides):
  return dataclasses.replace(optim.OptimSpec(lr=2.5e-2, d_lr=1e-2), **overrides)


def _labels(params, frozen_affine=False):
  """Groups of the toy parameters, declared as a network would (heads, frozen BN affine)."""
  model = types.SimpleNamespace(HEAD_MODULES=HEADS, freeze_bn_affine=frozen_affine)
  return models.parameter_groups(model, params)


def _params(seed=0):
  rng = np.random.default_rng(seed)
  f = lambda *s: rng.normal(size=s).astype(np.float32)
  return {
      "layer0": {"conv": {"kernel": f(3, 3, 2, 4)}, "bn": {"scale": f(4), "bias": f(4)}},
      "layer1": {"conv": {"kernel": f(1, 1, 4, 4), "bias": f(4)}},
      "seg_main": {"kernel": f(1, 1, 4, 3), "bias": f(3)},
  }


def _grads(params, num, seed=1):
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
          for _ in range(num)]


def _flat(tree):
  return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _run_optax(tx, params, grads):
  params = jax.tree.map(jnp.asarray, params)
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params


def _run_torch_sgd(params, grads, cfg, head=(), frozen=()):
  """torch.optim.SGD with one or two groups; `frozen` keys are left out of the optimiser."""
  import torch  # pylint: disable=g-import-not-at-top
  tparams = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in _flat(params).items()}
  groups = [
      {"params": [p for k, p in tparams.items() if k not in head and k not in frozen], "mult": 1.0},
      {"params": [p for k, p in tparams.items() if k in head and k not in frozen],
       "mult": cfg.head_lr_mult},
  ]
  opt = torch.optim.SGD([g for g in groups if g["params"]], lr=cfg.lr, momentum=cfg.momentum,
                        weight_decay=cfg.weight_decay)
  for i, g in enumerate(grads):
    for group in opt.param_groups:
      group["lr"] = cfg.lr * (1 - i / NUM_STEPS) ** cfg.power * group["mult"]
    for k, v in _flat(g).items():
      tparams[k].grad = torch.tensor(v)
    opt.step()
  return {k: p.detach().numpy() for k, p in tparams.items()}


def _assert_close(jax_params, torch_params, atol=1e-6):
  flat = _flat(jax_params)
  assert flat.keys() == torch_params.keys()
  for k, v in flat.items():
    np.testing.assert_allclose(np.asarray(v), torch_params[k], atol=atol, rtol=0, err_msg=k)


@pytest.mark.torch
@pytest.mark.parametrize("num_updates", [1, 3])
def test_sgd_matches_torch(num_updates):
  cfg, params = _cfg(), _params()
  grads = _grads(params, num_updates)
  got = _run_optax(optim.make_segmentation_optimizer(cfg, NUM_STEPS, _labels(params)), params,
                   grads)
  _assert_close(got, _run_torch_sgd(params, grads, cfg))
  # The update is real: a parameter moved by far more than the tolerance.
  assert np.abs(np.asarray(got["layer1"]["conv"]["kernel"])
                - params["layer1"]["conv"]["kernel"]).max() > 1e-3


@pytest.mark.torch
def test_head_lr_mult_matches_torch_two_groups():
  cfg, params = _cfg(head_lr_mult=10.0), _params()
  grads = _grads(params, 3)
  head = {k for k in _flat(params) if k.startswith("['seg_main']")}
  got = _run_optax(optim.make_segmentation_optimizer(cfg, NUM_STEPS, _labels(params)), params,
                   grads)
  _assert_close(got, _run_torch_sgd(params, grads, cfg, head=head))
  single = _run_torch_sgd(params, grads, _cfg())
  assert not np.allclose(np.asarray(got["seg_main"]["kernel"]), single["['seg_main']['kernel']"])


@pytest.mark.torch
def test_frozen_bn_affine_unchanged_and_rest_matches_torch():
  cfg, params = _cfg(), _params()
  grads = _grads(params, 3)
  tx = optim.make_segmentation_optimizer(cfg, NUM_STEPS, _labels(params, frozen_affine=True))
  got = _run_optax(tx, params, grads)
  np.testing.assert_array_equal(got["layer0"]["bn"]["scale"], params["layer0"]["bn"]["scale"])
  np.testing.assert_array_equal(got["layer0"]["bn"]["bias"], params["layer0"]["bn"]["bias"])
  frozen = {"['layer0']['bn']['scale']", "['layer0']['bn']['bias']"}
  _assert_close(got, _run_torch_sgd(params, grads, cfg, frozen=frozen))
  # A conv bias is not a BN param: it still trains.
  assert not np.allclose(got["layer1"]["conv"]["bias"], params["layer1"]["conv"]["bias"])


def test_parameter_groups_labels():
  labels = _labels(_params(), frozen_affine=True)
  assert labels["layer0"]["bn"] == {"scale": "frozen", "bias": "frozen"}
  assert labels["layer1"]["conv"] == {"kernel": "body", "bias": "body"}
  assert labels["seg_main"] == {"kernel": "head", "bias": "head"}
  assert _labels(_params())["layer0"]["bn"] == {"scale": "body", "bias": "body"}


@pytest.mark.parametrize("name, options, heads, frozen", [
    ("deeplabv2_r101", {}, {"main_head", "aux_head"}, True),
    ("deeplabv2_r101", {"freeze_bn_affine": False}, {"main_head", "aux_head"}, False),
    ("drn_d_22", {"width": 1 / 16}, {"seg_main", "seg_aux"}, False),
    ("drn_d_38", {"width": 1 / 16, "freeze_bn_affine": True}, {"seg_main", "seg_aux"}, True),
])
def test_networks_declare_their_own_groups(name, options, heads, frozen):
  """Heads and frozen BN affine come from the network and its options: one owner."""
  model = models.create_model(name, **options)
  params = models.abstract_variables(name, **options)["params"]
  labels = jax.tree_util.tree_flatten_with_path(models.parameter_groups(model, params))[0]
  by_group = {}
  for path, label in labels:
    names = tuple(k.key for k in path)
    by_group.setdefault(label, set()).add(names)
  assert {p[0] for p in by_group[models.HEAD]} == heads
  bn_affine = {p for group in by_group.values() for p in group
               if p[-1] in ("scale", "bias") and (*p[:-1], "scale") in
               {q for g in by_group.values() for q in g}}
  assert bool(bn_affine) and (bn_affine <= by_group.get(models.FROZEN, set())) == frozen
  assert all(p[-1] in ("scale", "bias") for p in by_group.get(models.FROZEN, ()))


def test_head_lr_mult_without_head_params_is_an_error():
  params = {"layer0": _params()["layer0"]}
  with pytest.raises(ValueError, match="head_lr_mult"):
    optim.make_segmentation_optimizer(_cfg(head_lr_mult=10.0), NUM_STEPS, _labels(params))


@pytest.mark.torch
def test_adam_matches_torch():
  import torch  # pylint: disable=g-import-not-at-top
  cfg, params = _cfg(), _params()
  grads = _grads(params, 3)
  got = _run_optax(optim.make_discriminator_optimizer(cfg, NUM_STEPS), params, grads)
  tparams = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in _flat(params).items()}
  opt = torch.optim.Adam(list(tparams.values()), lr=cfg.d_lr, betas=(0.9, 0.99), eps=1e-8)
  for i, g in enumerate(grads):
    opt.param_groups[0]["lr"] = cfg.d_lr * (1 - i / NUM_STEPS) ** cfg.power
    for k, v in _flat(g).items():
      tparams[k].grad = torch.tensor(v)
    opt.step()
  _assert_close(got, {k: p.detach().numpy() for k, p in tparams.items()})


def test_poly_schedule_values():
  sched = optim.poly_schedule(1e-3, 100, power=0.9)
  np.testing.assert_allclose(sched(0), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(sched(50), 1e-3 * 0.5 ** 0.9, rtol=1e-6)
  np.testing.assert_allclose(sched(99), 1e-3 * 0.01 ** 0.9, rtol=1e-5)
  assert float(sched(100)) == 0.0
  assert float(sched(150)) == 0.0
  with pytest.raises(ValueError, match="num_steps"):
    optim.poly_schedule(1e-3, 0)


def test_learning_rates_jittable():
  cfg = _cfg(head_lr_mult=10.0)
  rates = jax.jit(lambda s: optim.learning_rates(cfg, 100, s))(jnp.int32(50))
  assert "d_lr" not in optim.learning_rates(cfg, 100, 0, with_discriminators=False)
  np.testing.assert_allclose(rates["lr"], cfg.lr * 0.5 ** 0.9, rtol=1e-6)
  np.testing.assert_allclose(rates["head_lr"], 10 * cfg.lr * 0.5 ** 0.9, rtol=1e-6)
  np.testing.assert_allclose(rates["d_lr"], cfg.d_lr * 0.5 ** 0.9, rtol=1e-6)


def test_adam_network_optimizer_matches_torch(torch):
  """`optimizer='adam'`: torch Adam (betas (0.5, 0.999), eps 1e-8) with its coupled weight
  decay and the poly rate set before each step."""
  spec = optim.OptimSpec(lr=1e-2, optimizer='adam', betas=(0.5, 0.999), weight_decay=1e-3)
  w0 = np.random.default_rng(0).normal(size=(3, 4))
  grads = [np.random.default_rng(i + 1).normal(size=(3, 4)) for i in range(3)]
  tx = optim.make_segmentation_optimizer(spec, 10, {'w': models.BODY})
  params, state = {'w': jnp.asarray(w0, jnp.float32)}, None
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update({'w': jnp.asarray(g, jnp.float32)}, state, params)
    params = optax.apply_updates(params, updates)
  w = torch.tensor(w0, requires_grad=True)
  opt = torch.optim.Adam([w], lr=1e-2, betas=(0.5, 0.999), weight_decay=1e-3)
  for i, g in enumerate(grads):
    opt.param_groups[0]['lr'] = 1e-2 * (1 - i / 10) ** 0.9
    w.grad = torch.tensor(g)
    opt.step()
  np.testing.assert_allclose(params['w'], w.detach().numpy(), rtol=1e-5, atol=1e-6)
