"""Orbax training checkpoints: state + grain iterator round trip, retention, resume, shardings."""

import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct
from flax.training import train_state

from dakd_jax import checkpointing
from dakd_jax import sharding


class PlayerState(train_state.TrainState):
  batch_stats: dict


class State(struct.PyTreeNode):
  student: PlayerState
  step: jax.Array
  rng: jax.Array


TX = optax.sgd(0.1, momentum=0.9)


def _apply(variables, x):
  return x @ variables["params"]["dense"]["kernel"]


def _state(key_fn=jax.random.key, seed=0):
  rng = np.random.default_rng(seed)
  params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)},
            "bn": {"scale": jnp.ones((2,)), "bias": jnp.zeros((2,))}}
  student = PlayerState.create(apply_fn=_apply, params=params,
                               tx=TX,
                               batch_stats={"bn": {"mean": jnp.zeros((2,)), "var": jnp.ones((2,))}})
  # One real update so that the momentum trace and the step count are non-trivial.
  student = student.apply_gradients(grads=jax.tree.map(jnp.ones_like, params))
  return State(student=student, step=jnp.int32(7), rng=key_fn(seed))


def _iterator(n=20):
  return iter(grain.MapDataset.range(n).map(lambda i: {"x": np.int64(i * 10)})
              .to_iter_dataset())


def _assert_same(a, b):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    if isinstance(y, int):  # TrainState.step is a Python int after apply_gradients
      assert int(x) == y
      continue
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      assert jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key)
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("key_fn", [jax.random.key, jax.random.PRNGKey])
def test_round_trip_state_and_iterators(tmp_path, key_fn):
  state = _state(key_fn)
  source, target = _iterator(), _iterator(7)
  for _ in range(3):
    next(source)
  next(target)
  manager = checkpointing.make_checkpoint_manager(tmp_path, max_to_keep=2, save_interval_steps=1)
  assert checkpointing.save_checkpoint(manager, 7, state, {"source": source, "target": target})
  # The iterator states were captured at save time: advancing now must not leak into the save.
  expected_source = [next(source)["x"] for _ in range(2)]
  expected_target = next(target)["x"]
  manager.wait_until_finished()

  fresh_source, fresh_target = _iterator(), _iterator(7)
  restored = checkpointing.restore_checkpoint(
      manager, checkpointing.abstract_like(_state(key_fn, seed=1)),
      {"source": fresh_source, "target": fresh_target})
  manager.close()
  assert isinstance(restored, State) and isinstance(restored.student, PlayerState)
  _assert_same(restored, state)
  # Static fields come from the abstract tree, so the restored state is usable as is.
  assert restored.student.apply_fn is _apply and restored.student.tx is TX
  assert [next(fresh_source)["x"] for _ in range(2)] == expected_source
  assert next(fresh_target)["x"] == expected_target
  # The rng continues the same stream.
  np.testing.assert_array_equal(jax.random.uniform(restored.rng, (3,)),
                                jax.random.uniform(state.rng, (3,)))


def test_max_to_keep_interval_and_latest_step(tmp_path):
  state = _state()
  it = _iterator()
  manager = checkpointing.make_checkpoint_manager(tmp_path, max_to_keep=2, save_interval_steps=2,
                                                  async_save=False)
  assert checkpointing.latest_step(manager) is None
  with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
    checkpointing.restore_checkpoint(manager, checkpointing.abstract_like(state), {})
  saved = [checkpointing.save_checkpoint(manager, s, state, {"data": it}) for s in range(1, 8)]
  assert saved == [False, True, False, True, False, True, False]
  assert checkpointing.save_checkpoint(manager, 7, state, {"data": it}, force=True)
  manager.wait_until_finished()
  assert manager.all_steps() == [6, 7]
  assert checkpointing.latest_step(manager) == 7
  manager.close()
  assert sorted(p for p in os.listdir(tmp_path) if p.isdigit()) == ["6", "7"]


def test_restore_onto_replicated_eight_device_sharding(tmp_path):
  state = _state()
  manager = checkpointing.make_checkpoint_manager(tmp_path, max_to_keep=1, save_interval_steps=1)
  checkpointing.save_checkpoint(manager, 1, state, {})  # written from a single device
  manager.wait_until_finished()
  replicated = sharding.replicated(sharding.make_mesh())
  concrete = jax.device_put(_state(seed=1), replicated)
  from_arrays = checkpointing.abstract_like(concrete)
  # The other route: shapes from eval_shape (no allocation), shardings added.
  from_eval_shape = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
      jax.eval_shape(_state))
  for abstract in (from_arrays, from_eval_shape, concrete):
    restored = checkpointing.restore_checkpoint(manager, abstract, {})
    _assert_same(restored, state)
    for leaf in jax.tree.leaves(restored):
      assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
  manager.close()


def test_interrupted_save_is_ignored(tmp_path):
  state = _state()
  manager = checkpointing.make_checkpoint_manager(tmp_path, max_to_keep=3, save_interval_steps=1)
  checkpointing.save_checkpoint(manager, 1, state, {"data": _iterator()})
  manager.close()
  # What a crash mid-save leaves: tmp folders (current and legacy names) holding partial files.
  for name in ("2.orbax-checkpoint-tmp", "3.orbax-checkpoint-tmp-1722000000"):
    (tmp_path / name / "state").mkdir(parents=True)
    (tmp_path / name / "state" / "partial").write_text("half-written")
  manager = checkpointing.make_checkpoint_manager(tmp_path, max_to_keep=3, save_interval_steps=1)
  assert checkpointing.latest_step(manager) == 1
  # The resumed run can save the same step number again.
  checkpointing.save_checkpoint(manager, 2, state, {"data": _iterator()})
  manager.wait_until_finished()
  assert checkpointing.latest_step(manager) == 2
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]  # the leftovers were cleaned up
  restored = checkpointing.restore_checkpoint(manager, checkpointing.abstract_like(state),
                                              {"data": _iterator()})
  manager.close()
  _assert_same(restored, state)


def test_reserved_iterator_name(tmp_path):
  manager = checkpointing.make_checkpoint_manager(tmp_path, max_to_keep=1, save_interval_steps=1)
  with pytest.raises(ValueError, match="reserved"):
    checkpointing.save_checkpoint(manager, 1, _state(), {"state": _iterator()})
  manager.close()


def test_variables_round_trip(tmp_path):
  variables = {"params": _state().student.params, "batch_stats": _state().student.batch_stats}
  checkpointing.save_variables(tmp_path / "weights", variables)
  _assert_same(checkpointing.load_variables(tmp_path / "weights"), variables)
  with pytest.raises(FileNotFoundError, match="no such variables checkpoint"):
    checkpointing.load_variables(tmp_path / "missing")
