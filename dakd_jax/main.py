"""Entry point: `python -m dakd_jax.main --config configs/gta2cs.py --workdir DIR`.

Intentionally short: flags, multi-process start-up and logging; the work is in importable
libraries (`dakd_jax.experiment`) that tests and notebooks call directly. Overrides follow
ml_collections syntax, e.g. `--config.pipeline=distill_b --config.stages.distill_b.num_steps=1000`.
"""

import logging as py_logging
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from dakd_jax import experiment

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/*.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() with cluster auto-detection '
    '(Slurm, Kubernetes, Cloud TPU). Implied by --coordinator_address.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Index of this process.')
_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', None, 'Persistent XLA compilation cache shared by runs with the '
    'same programs (resumed runs, other seeds); default <workdir>/xla_cache, "" to disable.')


def _maybe_initialize_distributed():
  if _COORDINATOR.value:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # Used only on CPU.
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()


_QUIET_LIBRARIES = ('/orbax/', '/tensorflow_datasets/', '/grain/', '/etils/')


def _quiet_library_info(record):
  """Keeps our INFO lines; libraries (Orbax logs every save) speak only from WARNING up."""
  return record.levelno >= py_logging.WARNING or not any(
      part in record.pathname for part in _QUIET_LIBRARIES)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_quiet_library_info)
  _maybe_initialize_distributed()
  cache_dir = _CACHE_DIR.value
  if cache_dir is None:
    cache_dir = os.path.join(_WORKDIR.value, 'xla_cache')
  if cache_dir:
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  logging.info('process %d of %d; local devices: %s; global device count %d',
               jax.process_index(), jax.process_count(), jax.local_devices(), jax.device_count())
  logging.info('config:\n%s', _CONFIG.value)
  experiment.run(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
