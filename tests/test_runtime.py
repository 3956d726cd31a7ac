"""The runtime's description and the config fitted to its devices (the notebooks' set-up)."""

import jax
import pytest

from configs import demo
from dakd_jax import runtime
from dakd_jax import sharding


def test_describe_names_every_device_and_the_versions():
  line = runtime.describe()
  assert line.startswith(f'{jax.device_count()} x cpu (cpu), 1 process(es); JAX {jax.__version__}')
  assert runtime.describe(jax.devices()[:1]).startswith('1 x cpu')


@pytest.mark.parametrize('backend, dtype', [('tpu', 'bfloat16'), ('gpu', 'bfloat16'),
                                            ('cpu', 'float32'), ('METAL', 'float32')])
def test_default_compute_dtype(backend, dtype):
  assert runtime.default_compute_dtype(backend) == dtype


def test_fit_config_rounds_every_batch_up_to_the_devices():
  config = demo.get_config()
  config.stages.teacher.batch_size = 12
  devices = jax.devices()[:8]
  changes = runtime.fit_config(config, devices=devices)
  assert {s.batch_size for s in config.stages.values()} == {8, 16}
  assert changes['stages.teacher.batch_size'] == (12, 16)
  assert changes['stages.student.batch_size'] == (4, 8)
  assert 'compute_dtype' not in changes  # float32 on CPU already.
  mesh = sharding.make_mesh(devices)
  for stage in config.stages.values():
    sharding.check_batch_divisible(stage.batch_size, mesh)


def test_fit_config_sets_the_compute_dtype_and_keeps_fitting_batches():
  config = demo.get_config()
  changes = runtime.fit_config(config, compute_dtype='bfloat16', devices=jax.devices()[:2])
  assert changes == {'compute_dtype': ('float32', 'bfloat16')}
  assert config.compute_dtype == 'bfloat16'
  assert {s.batch_size for s in config.stages.values()} == {4}
