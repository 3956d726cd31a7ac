"""MetricWriter: JSONL, TensorBoard events (read without TensorBoard), process gating, no TF."""

import glob
import json
import os
import struct
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
from tensorboardX.proto import event_pb2

from dakd_jax import writers


def _read_events(path):
  """Parses a TFRecord events file by hand: [len u64][crc u32][data][crc u32] records."""
  events = []
  with open(path, "rb") as f:
    while header := f.read(12):
      (length,) = struct.unpack("<Q", header[:8])
      events.append(event_pb2.Event.FromString(f.read(length)))
      f.read(4)
  return events


def test_scalars_to_jsonl_and_events(tmp_path):
  with writers.MetricWriter(tmp_path) as w:
    w.write_hparams({"optim": {"lr": 2.5e-4, "momentum": 0.9}, "model": "drn_d_22",
                     "size": (512, 1024)})
    w.write_scalars(1, {"loss": jnp.float32(0.5), "lr": np.float64(2.5e-4)})
    w.write_scalars(2, {"loss": 0.25, "bad": float("nan")})
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines]
  assert [r["step"] for r in records] == [1, 2]
  assert records[0]["loss"] == 0.5 and records[0]["lr"] == 2.5e-4
  assert records[1]["bad"] is None  # strict JSON: NaN -> null
  hparams = json.loads((tmp_path / "hparams.json").read_text())
  assert hparams == {"optim.lr": 2.5e-4, "optim.momentum": 0.9, "model": "drn_d_22",
                     "size": "(512, 1024)"}

  (events_file,) = glob.glob(os.fspath(tmp_path / "events.out.tfevents.*"))
  scalars = {}
  plugins = set()
  for event in _read_events(events_file):
    for value in event.summary.value:
      if value.metadata.plugin_data.plugin_name:
        plugins.add(value.metadata.plugin_data.plugin_name)
      else:
        scalars[(value.tag, event.step)] = value.simple_value
  assert scalars[("loss", 1)] == 0.5 and scalars[("loss", 2)] == 0.25
  assert np.isclose(scalars[("lr", 1)], 2.5e-4)
  assert "hparams" in plugins


def test_disabled_writer_writes_nothing(tmp_path):
  w = writers.MetricWriter(tmp_path / "other", enabled=False)
  w.write_scalars(1, {"loss": 1.0})
  w.write_hparams({"lr": 1.0})
  w.flush()
  w.close()
  assert not (tmp_path / "other").exists()


def test_append_across_writers_and_noop_after_close(tmp_path):
  w = writers.MetricWriter(tmp_path)
  w.write_scalars(1, {"a": 1.0})
  w.close()
  w.write_scalars(2, {"a": 2.0})  # after close: ignored, no error
  with writers.MetricWriter(tmp_path) as w2:  # a resumed run appends
    w2.write_scalars(3, {"a": 3.0})
  steps = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 3]


def test_works_with_tensorflow_blocked(tmp_path):
  # `sys.modules[name] = None` makes any `import tensorflow` raise, even where TF is installed.
  script = textwrap.dedent(f"""
      import sys
      sys.modules["tensorflow"] = None
      from dakd_jax import writers
      with writers.MetricWriter({os.fspath(tmp_path)!r}) as w:
        w.write_hparams({{"lr": 0.1}})
        w.write_scalars(0, {{"loss": 1.0}})
      assert sys.modules["tensorflow"] is None
  """)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, "-c", script], check=True, env=env,
                 cwd=os.path.dirname(os.path.dirname(__file__)))
  assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1
