"""The ('data',) mesh, shardings and host batch -> global arrays, on 8 simulated CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dakd_jax import sharding


def _batch(n=8):
  rng = np.random.default_rng(0)
  return {
      "image": rng.normal(size=(n, 4, 6, 3)).astype(np.float32),
      "label": rng.integers(0, 19, size=(n, 4, 6)).astype(np.int32),
      "name": np.array([f"img_{i:03d}" for i in range(n)]),
  }


def test_mesh_over_all_devices():
  assert jax.device_count() == 8
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ("data",) and mesh.size == 8
  assert sharding.make_mesh(jax.devices()[:1]).size == 1
  with pytest.raises(ValueError, match="empty"):
    sharding.make_mesh([])


def test_global_batch_shapes_and_shardings():
  mesh = sharding.make_mesh()
  batch = _batch()
  out = sharding.to_global_batch(batch, mesh)
  assert isinstance(out["name"], np.ndarray) and list(out["name"]) == list(batch["name"])
  for key in ("image", "label"):
    assert isinstance(out[key], jax.Array)
    assert out[key].shape == batch[key].shape and out[key].dtype == batch[key].dtype
    assert out[key].sharding.is_equivalent_to(sharding.batch_sharding(mesh), out[key].ndim)
    # One row per device.
    assert {s.data.shape[0] for s in out[key].addressable_shards} == {1}
    np.testing.assert_array_equal(out[key], batch[key])


def test_uneven_batch_errors():
  mesh = sharding.make_mesh()
  with pytest.raises(ValueError, match="batch\\['image'\\] has 6 rows"):
    sharding.to_global_batch({"image": np.zeros((6, 2), np.float32)}, mesh)
  with pytest.raises(ValueError, match="config.batch_size=6 .* 8 devices"):
    sharding.check_batch_divisible(6, mesh)
  with pytest.raises(ValueError, match="config.source.batch=0"):
    sharding.check_batch_divisible(0, mesh, key="source.batch")
  sharding.check_batch_divisible(16, mesh)


def test_replicated_state_stays_replicated_through_jit():
  mesh = sharding.make_mesh()
  state = jax.device_put({"w": jnp.ones((3,)), "count": jnp.int32(0)}, sharding.replicated(mesh))
  batch = sharding.to_global_batch(_batch(), mesh)
  del batch["name"]  # host-only: never an argument of a jitted function

  @jax.jit
  def step(state, batch):
    return {"w": state["w"] + batch["image"].mean(axis=(0, 1, 2)), "count": state["count"] + 1}

  new = step(state, batch)
  for leaf in jax.tree.leaves(new):
    assert leaf.sharding.is_fully_replicated
    assert len(leaf.sharding.device_set) == 8


def test_one_device_and_eight_devices_agree():
  batch = _batch()

  del batch["name"]

  @jax.jit
  def mean_and_hist(b):
    return b["image"].mean(), jnp.bincount(b["label"].reshape(-1), length=19)

  one = mean_and_hist(sharding.to_global_batch(batch, sharding.make_mesh(jax.devices()[:1])))
  eight = mean_and_hist(sharding.to_global_batch(batch, sharding.make_mesh()))
  np.testing.assert_allclose(one[0], eight[0], rtol=1e-6)
  np.testing.assert_array_equal(one[1], eight[1])
  np.testing.assert_allclose(eight[0], batch["image"].mean(), rtol=1e-5)


def test_process_sum_single_process():
  assert jax.process_count() == 1
  assert int(sharding.process_sum(5)) == 5
  np.testing.assert_array_equal(sharding.process_sum(np.array([1, 2])), [1, 2])
