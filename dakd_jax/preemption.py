"""Stopping a training stage cleanly when the machine is being taken away.

The first SIGTERM or SIGINT asks the loop to stop after the step in flight: it writes a checkpoint
at that step, waits until it is committed and raises `Preempted`, which the entry point turns into
one line and exit status 0; rerunning the same command resumes exactly. A second signal aborts
at once (KeyboardInterrupt), still letting a checkpoint already being written complete.

With several processes a signal reaches each on its own; there the loop stops at JAX's
preemption sync point instead (`jax.distributed` with its preemption service), so that every
process saves the same step.
"""

import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """Training stopped on request after writing a checkpoint at `step`."""

  def __init__(self, stage, step, reason):
    super().__init__(f'{stage}: stopped by {reason} after step {step}; its checkpoint is written: '
                     'run the same command again to resume')
    self.stage, self.step, self.reason = stage, step, reason


class StopOnSignal:
  """Context manager: `requested(step)` turns true after the first SIGTERM/SIGINT.

  Handlers are installed only in the main thread (elsewhere signals cannot be caught, and only
  the multi-process sync point applies); the previous handlers come back on exit.
  """

  def __init__(self):
    self.reason = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.reason is not None:  # The second signal: abort now.
      raise KeyboardInterrupt(f'second {signal.Signals(signum).name}: aborted')
    self.reason = signal.Signals(signum).name
    logging.warning('%s received: stopping after this step with a checkpoint (send it again to '
                    'abort at once)', self.reason)

  def requested(self, step):
    """Whether to stop after `step` (every process calls this at every step)."""
    if jax.process_count() > 1:
      if multihost_utils.reached_preemption_sync_point(step):
        self.reason = self.reason or 'a preemption notice'
        return True
      return False
    return self.reason is not None
