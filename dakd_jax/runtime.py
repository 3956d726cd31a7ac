"""The machine a run is on (a Colab TPU, GPU or CPU runtime, or any host), and the config that
suits it.

`describe()` says what JAX sees. `fit_config(config)` makes a config use all of it: bfloat16
compute (float32 parameters) on TPUs and GPUs, float32 on CPUs, and every stage's global batch
rounded up to a multiple of the device count, so that the `('data',)` mesh of
`sharding.make_mesh()` (every device, e.g. all cores of a TPU) splits it evenly.
"""

import platform as platform_lib
from typing import Any, Optional, Sequence

import jax

from dakd_jax import evaluate
from dakd_jax import sharding

# The compute dtype each backend runs fastest without changing results beyond the seed spread
# (docs/benchmarks.md: bf16 demo table); XLA:CPU has no fast bf16 convolution.
COMPUTE_DTYPES = {'tpu': 'bfloat16', 'gpu': 'bfloat16', 'cpu': 'float32'}


def describe(devices: Optional[Sequence[jax.Device]] = None) -> str:
  """One line: the devices (count, kind, backend), processes, JAX and Python versions."""
  devices = jax.devices() if devices is None else list(devices)
  kinds = ', '.join(sorted({d.device_kind for d in devices}))
  return (f'{len(devices)} x {kinds} ({devices[0].platform}), {jax.process_count()} '
          f'process(es); JAX {jax.__version__}, Python {platform_lib.python_version()}')


def default_compute_dtype(backend: Optional[str] = None) -> str:
  """'bfloat16' on TPU and GPU, 'float32' on CPU (and on backends not listed)."""
  return COMPUTE_DTYPES.get(backend or jax.default_backend(), 'float32')


def fit_config(config, compute_dtype: Optional[str] = None,
               devices: Optional[Sequence[jax.Device]] = None) -> dict[str, tuple[Any, Any]]:
  """Sets `config.compute_dtype` and every stage's `batch_size` for the devices, in place.

  Args:
    config: an experiment config (configs/*.py), not locked.
    compute_dtype: the dtype to use; None picks `default_compute_dtype()` of the devices.
    devices: the mesh's devices (default: every device).

  Returns:
    What changed: `{dotted key: (old value, new value)}` (`--config.<key>=<new>` on the command
    line of `python -m dakd_jax.main` makes the same run).
  """
  mesh = sharding.make_mesh(devices)
  backend = mesh.devices.flat[0].platform
  changes = {'compute_dtype': (config.compute_dtype,
                               compute_dtype or default_compute_dtype(backend))}
  for name, stage in config.stages.items():
    changes[f'stages.{name}.batch_size'] = (
        stage.batch_size, evaluate.global_batch_size(stage.batch_size, mesh))
  changed = {key: (old, new) for key, (old, new) in changes.items() if old != new}
  config.update_from_flattened_dict({key: new for key, (_, new) in changed.items()})
  return changed
