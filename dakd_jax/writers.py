"""Metric writer: console (logging), `<dir>/metrics.jsonl` and TensorBoard events, TF-free.

`clu.metric_writers` and `flax.metrics.tensorboard` import TensorFlow, which this project never
needs (style.md §1), so TensorBoard files are written with tensorboardX's protos and its
synchronous events file (no writer thread, no exit hook: a full disk or a kill loses nothing
already logged and prints nothing at exit). Only process 0 writes; on other processes every method
is a no-op, so callers need no `if process_index() == 0`.
"""

from collections.abc import Mapping
import json
import logging
import math
import os
import time
from typing import Any

import jax
import numpy as np
from tensorboardX import event_file_writer
from tensorboardX import summary as tbx_summary
from tensorboardX.proto import event_pb2

METRICS_FILE = "metrics.jsonl"
HPARAMS_FILE = "hparams.json"


def _scalar(value: Any) -> float:
  """A Python float from a Python/NumPy/JAX scalar (this pulls device values to the host)."""
  return float(np.asarray(value))


def _json_value(value: float) -> float | None:
  # Strict JSON has no NaN/inf; non-finite values become null.
  return value if math.isfinite(value) else None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested mappings (e.g. a ConfigDict's `to_dict()`) -> {'a.b': value}."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, name + "."))
    else:
      flat[name] = value
  return flat


def _hparam_value(value: Any) -> bool | int | float | str:
  # The TensorBoard hparams plugin accepts only these types.
  return value if isinstance(value, (bool, int, float, str)) else str(value)


class MetricWriter:
  """Writes scalars to logging, `<logdir>/metrics.jsonl` and TensorBoard events in `logdir`.

  Usable as a context manager. Every process may call every method; only process 0 writes.
  After `close()` every method is a no-op.
  """

  def __init__(self, logdir: str | os.PathLike[str], *, enabled: bool | None = None):
    """Args: logdir: output folder (created); enabled: default `jax.process_index() == 0`."""
    self._logdir = os.fspath(logdir)
    self._enabled = jax.process_index() == 0 if enabled is None else enabled
    self._jsonl = None
    self._tb = None
    if self._enabled:
      os.makedirs(self._logdir, exist_ok=True)
      self._jsonl = open(os.path.join(self._logdir, METRICS_FILE), "a", encoding="utf-8")
      self._tb = event_file_writer.EventsWriter(os.path.join(self._logdir, "events"))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Logs `{name: scalar}` at `step`; one JSON line `{"step", "time", name: value...}`."""
    if not self._enabled:
      return
    step = int(step)
    values = {name: _scalar(v) for name, v in scalars.items()}
    # Debug level: the console keeps the progress bar; the values are in the files.
    logging.debug("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
    record = {"step": step, "time": time.time()}
    record.update({k: _json_value(v) for k, v in values.items()})
    self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
    self._jsonl.flush()  # A killed run keeps every logged line.
    for name, value in values.items():
      self._write_event(tbx_summary.scalar(name, value), step, record["time"])
    self._tb.flush()

  def _write_event(self, summary, step: int, wall_time: float) -> None:
    self._tb.write_event(event_pb2.Event(wall_time=wall_time, step=step, summary=summary))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Records the (possibly nested) hyper-parameters: `hparams.json` and the TB hparams tab."""
    if not self._enabled:
      return
    flat = {k: _hparam_value(v) for k, v in flatten(hparams).items()}
    with open(os.path.join(self._logdir, HPARAMS_FILE), "w", encoding="utf-8") as f:
      json.dump(flat, f, indent=2, sort_keys=True)
    # Into this run's own events file (tensorboardX's add_hparams would open a sub-run).
    for proto in tbx_summary.hparams(flat, {}):
      self._write_event(proto, 0, time.time())
    self._tb.flush()

  def flush(self) -> None:
    if self._enabled:
      self._jsonl.flush()
      self._tb.flush()

  def close(self) -> None:
    if self._enabled:
      self._enabled = False
      try:
        self._jsonl.close()
      finally:  # Also when the disk is full.
        self._tb.close()

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
