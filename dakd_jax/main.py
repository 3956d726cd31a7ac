"""Entry point: `python -m dakd_jax.main --config configs/gta2cs.py --workdir DIR`.

Every field of the config file can be overridden on the command line, e.g.
`--config.pipeline=distill_b --config.stages.distill_b.num_steps=1000`; `--show_config` prints
every field with its value (after the overrides) and exits; `dakd_jax/config.py` documents each.

Intentionally short: flags, multi-process start-up and logging; the work is in importable
libraries (`dakd_jax.experiment`) that tests and notebooks call directly.
"""

import errno
import io
import logging as py_logging
import os
import runpy
import sys
import threading

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import tqdm

from dakd_jax import config as config_lib
from dakd_jax import errors
from dakd_jax import experiment
from dakd_jax import preemption
from dakd_jax import writers

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/*.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() with cluster auto-detection '
    '(Slurm, Kubernetes, Cloud TPU). Implied by --coordinator_address.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Index of this process.')
_VERBOSE = flags.DEFINE_bool(
    'verbose', False, 'Show the Python traceback of user mistakes too (also DAKD_VERBOSE=1); '
    'without it a mistake in the config or the data ends with one line on stderr, exit code 2.')
_SHOW_CONFIG = flags.DEFINE_bool(
    'show_config', False, 'Print the config (every field, after the --config.<field> overrides) '
    'and exit; --workdir is then not needed.')
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


_QUIET_LIBRARIES = ('/orbax/', '/tensorflow_datasets/', '/grain/', '/etils/', '/asyncio/')


def _quiet_library_info(record):
  """Keeps our INFO lines; libraries (Orbax logs every save) speak only from WARNING up, in one
  line each: their tracebacks only with --verbose (the error that stops the run says it all)."""
  if not any(part in record.pathname for part in _QUIET_LIBRARIES):
    return True
  if record.levelno < py_logging.WARNING:
    return False
  if not _verbose():
    record.exc_info = record.exc_text = None
    record.msg, record.args = ' '.join(record.getMessage().split()), ()
  return True


class _AboveProgressBars(io.TextIOBase):
  """stderr for log lines: each is printed above the progress bars, which are redrawn below."""

  def write(self, text):
    tqdm.tqdm.write(text, file=sys.stderr, end='')
    return len(text)

  def flush(self):
    sys.stderr.flush()


def _verbose(argv=()):
  return ('--verbose' in argv or (flags.FLAGS.is_parsed() and _VERBOSE.value)
          or os.environ.get('DAKD_VERBOSE', '') not in ('', '0'))


def _fail(message, status=errors.EXIT_USER_ERROR):
  """Ends the run with `error: <message>` on stderr (one line) and `status`.

  Without --verbose nothing is logged after that line: what libraries report while the process
  shuts down (Orbax's background writes failing on a full disk, futures never retrieved) are
  consequences of the failure the line states.
  """
  print(f'error: {message}', file=sys.stderr, flush=True)
  if not _verbose():
    logging.get_absl_handler().addFilter(lambda record: False)
  sys.exit(status)


def _ignored_exception(unraisable):
  """`sys.unraisablehook` without --verbose: an exception Python ignores (a library finaliser or
  callback, e.g. on an event loop Orbax already closed) is logged at DEBUG level, in one line."""
  logging.debug('ignored %s in %r: %s', type(unraisable.exc_value).__name__, unraisable.object,
                unraisable.exc_value)


def _config_file(argv):
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _explain_flag_error(argv, error):
  """One line for a failed flag parse: the unknown config field and its closest valid names, or
  the config file that does not load, or absl's own message."""
  path = _config_file(argv)
  if path is None:
    return f'--config: required (a config file such as configs/gta2cs.py); {error}'
  file = path.split(':', 1)[0]
  if not os.path.isfile(file):
    return f'--config {path}: no such file; expected a config file such as configs/gta2cs.py'
  try:
    config = runpy.run_path(file)['get_config']()
  except Exception as e:  # pylint: disable=broad-except
    return f'--config {path}: the file does not load: {type(e).__name__}: {e}'
  if isinstance(error, (AttributeError, KeyError)):
    for arg in argv:
      if arg.startswith('--config.'):
        message = config_lib.unknown_field(config, arg[len('--config.'):].split('=', 1)[0])
        if message:
          return message
  message = ' '.join(str(error).split())  # absl's messages span lines.
  return f'{message}' if isinstance(error, flags.Error) else f'{type(error).__name__}: {message}'


def _parse_flags(argv):
  """absl's parsing, with the user's mistakes (unknown or mistyped config fields, a config file
  that does not load) turned into one line on stderr and exit code 2."""
  try:
    rest = flags.FLAGS(argv)
    _CONFIG.value.keys()  # A config file that failed to load raises here.
    return rest
  except Exception as e:  # pylint: disable=broad-except
    if _verbose(argv):
      raise
    _fail(_explain_flag_error(argv, e))


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments: {argv[1:]}')
  if _SHOW_CONFIG.value:
    for key, value in writers.flatten(_CONFIG.value.to_dict()).items():
      print(f'config.{key} = {value!r}')
    return
  if _WORKDIR.value is None:
    _fail('--workdir: required (the directory for checkpoints, logs and results)')
  try:
    _main(argv)
  except (errors.UserError, FloatingPointError) as e:  # The non-finite guard says what was kept.
    if _verbose():
      raise
    _fail(e, errors.EXIT_USER_ERROR if isinstance(e, errors.UserError) else 1)
  except preemption.Preempted as e:
    print(e, file=sys.stderr, flush=True)  # Stopped on request, the work saved: a success.
  except OSError as e:
    if e.errno != errno.ENOSPC or _verbose():
      raise
    _fail(f'{e.filename or "a file"}: no space left on the device; free space and rerun (finished '
          'stages and committed checkpoints are kept)')


def _thread_exception(args):
  """`threading.excepthook` without --verbose: a background thread that dies (a library's writer
  on a full disk) is reported in one warning line; the error it causes ends the run."""
  logging.warning('thread %s stopped: %s: %s', getattr(args.thread, 'name', '?'),
                  args.exc_type.__name__, ' '.join(str(args.exc_value).split())[:300])


def _main(argv):
  logging.get_absl_handler().addFilter(_quiet_library_info)
  if not _verbose():
    sys.unraisablehook = _ignored_exception
    threading.excepthook = _thread_exception
  logging.get_absl_handler().python_handler.stream = _AboveProgressBars()
  _maybe_initialize_distributed()
  cache_dir = _CACHE_DIR.value
  if cache_dir is None:
    cache_dir = os.path.join(_WORKDIR.value, 'xla_cache')
  if cache_dir:
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  logging.info('process %d of %d; local devices: %s; global device count %d',
               jax.process_index(), jax.process_count(), jax.local_devices(), jax.device_count())
  experiment.run(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=_parse_flags)
