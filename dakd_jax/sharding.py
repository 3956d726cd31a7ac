"""Data parallelism over a 1-D `('data',)` device mesh (decisions.md: jit over a mesh, no pmap).

The training state is replicated on every device; batches are split along their leading axis.
Each host feeds its own slice of the global batch and `to_global_batch` stitches the slices into
global `jax.Array`s, so the same code runs on one CPU, one GPU, or a multi-host pod.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
import numpy as np

from dakd_jax import errors

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named `'data'` over `devices` (default: every global device, all processes).

  The axis is `AxisType.Auto`: shardings are given on inputs only and XLA propagates them, so the
  models and losses need no sharding annotations.
  """
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError("make_mesh: got an empty device list")
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (training state, teacher variables)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `'data'`, other axes whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_divisible(global_batch: int, mesh: Mesh, key: str = "batch_size") -> None:
  """Raises if `global_batch` (config key `key`) cannot be split evenly over the mesh devices."""
  if global_batch <= 0 or global_batch % mesh.size:
    raise errors.UserError(f"config.{key}={global_batch} must be a positive multiple of the "
                           f"{mesh.size} devices of the '{DATA_AXIS}' mesh")


def _is_host_only(x: np.ndarray) -> bool:
  # Strings, bytes and Python objects (file names) cannot live on an accelerator.
  return x.dtype.kind in "OUS"


def to_global_batch(host_batch: Mapping[str, Any], mesh: Mesh) -> dict[str, Any]:
  """Turns this process's slice of the batch into global arrays sharded on `'data'`.

  Args:
    host_batch: dict of NumPy arrays `[B_local, ...]` (e.g. `image` `[B, H, W, 3]` float32,
      `label` `[B, H, W]` int32); every process passes its own `B_local` rows, all the same size.
    mesh: the `('data',)` mesh.

  Returns:
    The same keys; numeric arrays become `jax.Array`s of shape `[B_local * process_count, ...]`
    with `batch_sharding(mesh)`; string/object arrays (e.g. `name`) stay NumPy on the host.
  """
  sharding = batch_sharding(mesh)
  out = {}
  for key, value in host_batch.items():
    value = np.asarray(value)
    if _is_host_only(value):
      out[key] = value
      continue
    if value.ndim == 0:
      raise ValueError(f"batch['{key}'] is a scalar; expected a leading batch axis")
    local_devices = len(mesh.local_devices)
    if value.shape[0] % local_devices:
      raise ValueError(f"batch['{key}'] has {value.shape[0]} rows on this process, not a "
                       f"multiple of its {local_devices} mesh devices")
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out


def process_sum(value: Any) -> np.ndarray:
  """Sums a host-side number or NumPy array over all processes (e.g. per-host image counts).

  Every process must call it; each gets the same result.
  """
  return np.asarray(multihost_utils.process_allgather(np.asarray(value))).sum(axis=0)
