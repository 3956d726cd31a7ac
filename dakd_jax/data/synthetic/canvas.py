"""The camera and drawing primitives of one synthetic scene (`Canvas`): projection of world
points, ground strips and walls, and the list of polygons / ellipses / lines to rasterise."""

from __future__ import annotations

import math

import numpy as np

from dakd_jax.data.synthetic.styles import Rgb, Style

LANE = 3.3  # metres


class Canvas:
  """The camera and primitive list of one scene: a pinhole camera over a flat road.

  World coordinates: `xr` metres lateral from the road centre line (positive = right), `y`
  metres above the road, `z` metres ahead of the camera. The centre line bends as
  `x0 + bend * z**2` in camera coordinates, and every lateral position follows it.
  """

  def __init__(self, rng: np.random.Generator, style: Style, size: tuple[int, int]):
    self.rng, self.style = rng, style
    self.h, self.w = size
    fov = math.radians(style.fov_deg + rng.uniform(-3.0, 3.0))
    self.f = self.w / (2.0 * math.tan(fov / 2.0))
    self.vh = self.h * (style.horizon + rng.uniform(-0.03, 0.03))
    self.hc = style.cam_height * rng.uniform(0.92, 1.08)
    self.lanes = int(rng.integers(2, 5))
    self.wr = self.lanes * LANE / 2.0
    # The camera drives in a lane right of the centre line.
    lane = int(rng.integers(self.lanes // 2, self.lanes))
    self.x0 = -(-self.wr + LANE * (lane + 0.5)) + rng.uniform(-0.4, 0.4)
    self.bend = rng.uniform(-7e-4, 7e-4) if rng.random() < 0.6 else 0.0
    self.prims: list[tuple[str, list[float], int, tuple[int, int, int], int]] = []
    self.objects: list[tuple[float, int, list]] = []  # (depth, order, primitives) of free objects

  # --- geometry -------------------------------------------------------------------------------
  def proj(self, xr: float, y: float, z: float) -> tuple[float, float]:
    """(xr, y, z) -> image (u, v) in pixels (scalars: this is the hot path)."""
    z = max(z, 0.3)
    return (self.w / 2.0 + self.f * (self.x0 + xr + self.bend * z * z) / z,
            self.vh + self.f * (self.hc - y) / z)

  def px(self, z: float) -> float:
    """Pixels per metre at depth z."""
    return self.f / max(z, 0.3)

  def ground_strip(self, xa: float, xb: float, z1: float, z2: float, n: int = 12):
    zs = [z1 * (z2 / z1) ** (i / (n - 1)) for i in range(n)]
    return [self.proj(xa, 0.0, z) for z in zs] + [self.proj(xb, 0.0, z) for z in zs[::-1]]

  def wall_quad(self, xr: float, z1: float, z2: float, y0: float, y1, n: int = 2):
    """A vertical surface at lateral xr from z1 to z2; y1 is a height or n top heights."""
    zs = [z1 + (z2 - z1) * i / (n - 1) for i in range(n)]
    tops = [y1] * n if np.isscalar(y1) else list(y1)
    return ([self.proj(xr, y0, z) for z in zs] +
            [self.proj(xr, y, z) for y, z in zip(tops[::-1], zs[::-1])])

  def front_rect(self, xa: float, xb: float, y0: float, y1: float, z: float):
    """A rectangle facing the camera at depth z."""
    u0, v0 = self.proj(xa, y0, z)
    u1, v1 = self.proj(xb, y1, z)
    return [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]

  # --- primitive collection -------------------------------------------------------------------
  @staticmethod
  def _rgb(rgb: Rgb) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(c))) for c in rgb)

  def poly(self, pts, label: int, rgb: Rgb, out: list | None = None):
    (self.prims if out is None else out).append(('p', [float(c) for p in pts for c in p],
                                                 label, self._rgb(rgb), 0))

  def ellipse(self, cu, cv, ru, rv, label: int, rgb: Rgb, out: list, width: int = 0):
    box = [float(cu - ru), float(cv - rv), float(cu + max(ru, 0.5)), float(cv + max(rv, 0.5))]
    out.append(('e', box, label, self._rgb(rgb), width))

  def line(self, pts, width: float, label: int, rgb: Rgb, out: list):
    out.append(('l', [float(c) for p in pts for c in p], label, self._rgb(rgb),
                max(1, int(round(width)))))

  def add_object(self, z: float, prims: list):
    self.objects.append((z, len(self.objects), prims))

  def poisson(self, key: str) -> int:
    return int(self.rng.poisson(self.style.counts[key]))

  def chance(self, key: str) -> bool:
    return bool(self.rng.random() < self.style.counts[key])

