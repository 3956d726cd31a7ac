"""Runs a network written by `python -m dakd_jax.tools.export`, with jax and numpy alone.

This file imports nothing else (no Flax, no dakd_jax): copy it beside the exported file to serve
the network where the project is not installed.

  net = ExportedNetwork('student.jaxexport')
  logits = net.logits(rgb)    # uint8 RGB [B, H, W, 3] -> float32 [B, H, W, C]
  train_ids = net.predict(rgb)  # -> uint8 [B, H, W]

One program is compiled per input shape, on the default backend (one of the platforms the file
was exported for).
"""

import json
import os

import jax
import numpy as np


class ExportedNetwork:
  """A deserialised `jax.export.Exported` inference function and its metadata.

  Attributes:
    exported: the `jax.export.Exported` (`in_avals`, `out_avals`, `platforms`).
    metadata: the `<file>.json` written beside it (network spec, contracts, class names), or {}.
  """

  def __init__(self, path: str):
    with open(path, 'rb') as f:
      self.exported = jax.export.deserialize(bytearray(f.read()))
    self.metadata = {}
    if os.path.exists(path + '.json'):
      with open(path + '.json') as f:
        self.metadata = json.load(f)
    self._call = jax.jit(self.exported.call)

  def logits(self, rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB `[B, H, W, 3]` -> float32 logits `[B, H, W, C]` at the input size."""
    return np.asarray(self._call(np.asarray(rgb, np.uint8)))

  def predict(self, rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB `[B, H, W, 3]` -> uint8 train ids `[B, H, W]` (arg-max of the logits)."""
    return np.argmax(self.logits(rgb), axis=-1).astype(np.uint8)
