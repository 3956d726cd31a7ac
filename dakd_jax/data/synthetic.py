"""The embedded synthetic domain pair: procedural driving scenes in the official layouts.

Real GTA5 / Cityscapes / BDD100K cannot be fetched by the program, so this module draws road
scenes in perspective (sky, road to a vanishing point, sidewalks, buildings, walls, fences,
vegetation, terrain, poles with lights and signs, vehicles, people) and writes them where the real
loaders look:

  <out>/gta5/images/NNNNN.png, <out>/gta5/labels/NNNNN.png           (source, Cityscapes label ids)
  <out>/cityscapes/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <out>/cityscapes/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
  <out>/bdd100k/images/10k/<split>/<name>.jpg                         (optional second target)
  <out>/bdd100k/labels/sem_seg/masks/<split>/<name>.png               (train ids, 255 = ignore)

Every scene is a list of primitives (polygons, ellipses, lines) sorted far to near; the label map
and the image are rasterised from the same list (labels without anti-aliasing), so labels are exact.
The domains differ in palette, white balance, contrast, texture, blur, noise, vignetting, haze,
camera height / horizon / field of view and object frequencies; shapes and layout are shared.
Each image has its own generator seeded by (seed, domain, split, index): bytes do not depend on
the order or the number of workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dakd_jax.data import labels

# Cityscapes label ids of what the generator draws (the table itself lives in `labels`).
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN = 7, 8, 11, 12, 13, 17, 19, 20
VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS = 21, 22, 23, 24, 25, 26, 27, 28
TRAIN, MOTORCYCLE, BICYCLE = 31, 32, 33
# Void label ids the generator also draws, so that the id -> train id map (to 255) is exercised.
EGO_VEHICLE, STATIC, PARKING, GUARD_RAIL = 1, 4, 9, 14
# GTA5 ships its label PNGs in palette mode: index = label id, colour = Cityscapes colour.
_GTA5_PALETTE = [c for i in range(256) for c in
                 next((l.color for l in labels.CITYSCAPES_LABELS if l.id == i), (0, 0, 0))]

# Bump whenever the drawing changes: the manifest then no longer matches and data is redrawn.
GENERATOR_VERSION = 2
MANIFEST_NAME = 'synthetic_manifest.json'
CITYSCAPES_CITIES = {'train': ('aachen', 'bochum', 'bremen', 'cologne'),
                     'val': ('frankfurt', 'lindau', 'munster')}
_DOMAIN_CODES = {'gta5': 0, 'cityscapes': 1, 'bdd100k': 2}
_SPLIT_CODES = {'train': 0, 'val': 1}
_LANE = 3.3  # metres

Rgb = tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class Style:
  """How one domain looks: camera, object mix, colour pipeline."""
  horizon: float  # horizon row as a fraction of the image height
  fov_deg: float  # horizontal field of view
  cam_height: float  # metres above the road
  counts: dict[str, float]  # Poisson means / probabilities of scene elements
  class_gain: dict[int, Rgb]  # per label id RGB gains (the part of the palette shift per class)
  white_balance: Rgb = (1.0, 1.0, 1.0)
  hue_deg: float = 0.0
  saturation: float = 1.0
  contrast: float = 1.0  # around grey 128
  brightness: float = 0.0
  texture: dict[int, float] = dataclasses.field(default_factory=dict)  # per label id amplitude
  texture_default: float = 0.0
  haze: float = 0.0
  vignette: float = 0.0
  blur: float = 0.0  # Gaussian blur radius in pixels
  noise: float = 0.0
  hood: bool = False  # draw the ego-vehicle bonnet at the bottom (label id 1)
  yellow_centre_line: bool = False


_SOURCE_COUNTS = dict(cars=4.0, parked=1.5, trucks=0.6, buses=0.3, trains=0.03, persons=2.5,
                      crossing=0.3, riders=0.5, bikes=0.3, motos=0.3, trees=0.35, fence=0.7,
                      wall=0.7, hedge=0.3, guard_rail=0.15, terrain=0.6, lights=1.6, signs=2.5,
                      lamps=1.5, static=1.0, parking=0.15, vegetation_block=0.15)
_TARGET_COUNTS = dict(_SOURCE_COUNTS, cars=2.5, parked=4.0, trucks=0.25, buses=0.15, trains=0.04,
                      persons=5.0, crossing=0.5, riders=0.9, bikes=1.0, motos=0.15, trees=0.6,
                      fence=0.6, wall=0.6, hedge=0.4, guard_rail=0.0, terrain=0.75, lights=1.3,
                      signs=3.0, vegetation_block=0.25)
_BDD_COUNTS = dict(_SOURCE_COUNTS, cars=5.0, parked=2.5, trucks=0.5, buses=0.25, persons=2.0,
                   riders=0.3, bikes=0.2, motos=0.2, trees=0.45, terrain=0.7)

STYLES: dict[str, Style] = {
    # "Synthetic": saturated flat colours, hard edges, clean lighting, high camera, wide lens.
    'gta5': Style(horizon=0.47, fov_deg=78.0, cam_height=1.7, counts=_SOURCE_COUNTS,
                  class_gain={}, yellow_centre_line=True),
    # "Real": cooler, washed-out palette, textured, blurred, noisy, vignetted, hazy; a slightly
    # lower camera with a slightly longer lens, bonnet in view, more parked cars, people and
    # bicycles. The camera differs mildly, as GTA5's and Cityscapes' do: version 1's much lower,
    # narrower camera (horizon 0.40, 62 deg, 1.25 m) made geometry, not appearance, the main gap
    # (measured: the source camera alone lifted a source-trained student from 18 to 25.6 mIoU).
    'cityscapes': Style(
        horizon=0.45, fov_deg=72.0, cam_height=1.5, counts=_TARGET_COUNTS,
        class_gain={ROAD: (1.05, 1.07, 1.12), SIDEWALK: (0.9, 0.92, 0.95),
                    BUILDING: (0.85, 0.85, 0.9), VEGETATION: (0.8, 0.88, 0.75),
                    TERRAIN: (0.9, 0.85, 0.65), SKY: (0.95, 0.97, 0.95), CAR: (0.85, 0.85, 0.9),
                    WALL: (0.9, 0.88, 0.85), FENCE: (0.85, 0.85, 0.85)},
        white_balance=(0.94, 1.0, 1.05), hue_deg=10.0, saturation=0.7, contrast=0.85,
        brightness=-6.0, texture={ROAD: 7.0, SIDEWALK: 8.0, BUILDING: 9.0, VEGETATION: 16.0,
                                  TERRAIN: 12.0, SKY: 5.0, WALL: 9.0},
        texture_default=4.0, haze=0.15, vignette=0.25, blur=0.6, noise=3.0, hood=True),
    # A third look: warm dusk, darker, very wide lens, low horizon, JPEG-compressed.
    'bdd100k': Style(
        horizon=0.52, fov_deg=88.0, cam_height=1.45, counts=_BDD_COUNTS,
        class_gain={SKY: (1.1, 0.9, 0.75), VEGETATION: (0.8, 0.8, 0.6), ROAD: (0.9, 0.88, 0.85)},
        white_balance=(1.12, 1.0, 0.8), hue_deg=-10.0, saturation=0.7, contrast=0.8,
        brightness=-22.0, texture={VEGETATION: 16.0, TERRAIN: 12.0, ROAD: 6.0, BUILDING: 8.0},
        texture_default=4.0, haze=0.15, vignette=0.25, blur=0.6, noise=6.0, hood=True),
}

# Canonical ("source") colours; the other domains are derived from them by their colour pipeline.
_ROAD_RGB = (92, 90, 104)
_SIDEWALK_RGB = (196, 170, 150)
_TERRAIN_RGB = (150, 196, 72)
_SKY_RGB = (90, 160, 250)
_VEG_RGB = (50, 160, 40)
_BUILDING_RGBS = ((205, 120, 80), (175, 175, 200), (225, 205, 140), (150, 95, 70), (230, 230, 215),
                  (120, 140, 170), (190, 70, 60))
_WALL_RGBS = ((205, 195, 170), (170, 160, 150), (215, 180, 140))
_FENCE_RGBS = ((160, 115, 60), (110, 130, 120), (150, 150, 160))
_VEHICLE_RGBS = ((220, 30, 30), (30, 60, 200), (240, 240, 240), (30, 30, 35), (160, 165, 175),
                 (240, 200, 20), (40, 140, 60), (120, 30, 110), (210, 110, 30))
_CLOTH_RGBS = ((200, 40, 40), (40, 60, 170), (30, 30, 30), (230, 230, 230), (60, 130, 60),
               (210, 170, 60), (120, 70, 140), (90, 90, 100), (170, 120, 80))
_SKIN_RGBS = ((240, 200, 170), (200, 150, 110), (140, 95, 60), (90, 60, 40))
_DARK = (25, 25, 30)
_GLASS = (60, 75, 95)


def _shade(rgb: Rgb, k: float) -> Rgb:
  return (rgb[0] * k, rgb[1] * k, rgb[2] * k)


class _Scene:
  """Builds the primitive list of one scene with a pinhole camera over a flat road.

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
    self.wr = self.lanes * _LANE / 2.0
    # The camera drives in a lane right of the centre line.
    lane = int(rng.integers(self.lanes // 2, self.lanes))
    self.x0 = -(-self.wr + _LANE * (lane + 0.5)) + rng.uniform(-0.4, 0.4)
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

  # --- layout -----------------------------------------------------------------------------------
  def build(self) -> None:
    rng = self.rng
    z_near, z_far = 0.8, 260.0
    # Everything below the horizon starts as terrain; the skyline sits on it.
    self.poly([(-self.w, self.vh), (2 * self.w, self.vh), (2 * self.w, 3 * self.h),
               (-self.w, 3 * self.h)], TERRAIN, _shade(_TERRAIN_RGB, rng.uniform(0.85, 1.1)))
    self.skyline(z_far)
    self.poly(self.ground_strip(-self.wr, self.wr, z_near, z_far, 20), ROAD,
              _shade(_ROAD_RGB, rng.uniform(0.85, 1.1)))
    self.road_markings()
    sides = {}
    for side in (-1, 1):
      x = self.wr
      if rng.random() < self.style.counts['parking']:
        self.poly(self.ground_strip(side * x, side * (x + 2.2), z_near, z_far), PARKING,
                  (120, 110, 120))
        x += 2.2
      sw = rng.uniform(2.0, 4.5)
      self.poly(self.ground_strip(side * x, side * (x + sw), z_near, z_far), SIDEWALK,
                _SIDEWALK_RGB)
      self.poly(self.ground_strip(side * x, side * (x + 0.25), z_near, z_far), SIDEWALK,
                _shade(_SIDEWALK_RGB, 0.75))  # kerb
      inner, outer = x, x + sw
      if self.chance('terrain'):
        tw = rng.uniform(1.0, 5.0)
        self.poly(self.ground_strip(side * outer, side * (outer + tw), z_near, z_far), TERRAIN,
                  _shade(_TERRAIN_RGB, rng.uniform(0.8, 1.15)))
        outer_line = outer + tw
      else:
        outer_line = outer
      sides[side] = (inner, outer, outer_line + rng.uniform(0.0, 2.0))
    for side in (-1, 1):
      self.facades(side, sides[side][2])
    for side in (-1, 1):
      self.side_structures(side, *sides[side][:2])
    self.street_furniture(sides)
    self.traffic(sides)
    for _, _, prims in sorted(self.objects, key=lambda o: (-o[0], o[1])):
      self.prims.extend(prims)
    if self.style.hood:
      self.hood()

  def skyline(self, z: float) -> None:
    """Far buildings and trees around the vanishing point."""
    rng = self.rng
    x = -160.0
    while x < 160.0:
      width = rng.uniform(6.0, 25.0)
      if rng.random() < 0.75:
        rgb = _shade(_BUILDING_RGBS[rng.integers(len(_BUILDING_RGBS))], 0.85)
        self.poly(self.front_rect(x, x + width, -1.0, rng.uniform(6.0, 35.0), z), BUILDING, rgb)
      else:
        u0, v0 = self.proj(x, -1.0, z)
        u1, _ = self.proj(x + width, 0.0, z)
        tops = [(u0 + (u1 - u0) * i / 5, self.proj(0.0, y, z)[1])
                for i, y in enumerate(rng.uniform(5.0, 14.0, 6))]
        self.poly([(u0, v0)] + tops + [(u1, v0)], VEGETATION, _shade(_VEG_RGB, 0.8))
      x += width + (rng.uniform(0.0, 10.0) if rng.random() < 0.3 else 0.0)

  def road_markings(self) -> None:
    rng = self.rng
    white = (235, 235, 235)
    for i in range(1, self.lanes):
      xr = -self.wr + _LANE * i
      centre = i == self.lanes // 2 and self.lanes % 2 == 0
      rgb = (235, 200, 30) if centre and self.style.yellow_centre_line else white
      if centre and rng.random() < 0.5:
        self.poly(self.ground_strip(xr - 0.08, xr + 0.08, 1.0, 160.0), ROAD, rgb)
        continue
      z = rng.uniform(1.0, 9.0)
      while z < 120.0:
        self.poly(self.ground_strip(xr - 0.08, xr + 0.08, z, z + 3.0, 2), ROAD, rgb)
        z += 9.0
    for side in (-1, 1):
      xr = side * (self.wr - 0.3)
      self.poly(self.ground_strip(xr - 0.07, xr + 0.07, 1.0, 160.0), ROAD, white)
    if rng.random() < 0.25:  # zebra crossing
      z = rng.uniform(8.0, 25.0)
      x = -self.wr + 0.5
      while x < self.wr - 0.5:
        self.poly(self.ground_strip(x, x + 0.5, z, z + 3.0, 2), ROAD, white)
        x += 1.0

  def facades(self, side: int, xb: float) -> None:
    """Buildings (with windows) and vegetation blocks along the building line, far to near."""
    rng = self.rng
    blocks = []
    z = rng.uniform(1.0, 6.0)
    while z < 140.0:
      length = rng.uniform(8.0, 30.0)
      blocks.append((z, z + length))
      z += length + (rng.uniform(2.0, 12.0) if rng.random() < 0.25 else 0.0)
    for z1, z2 in reversed(blocks):
      setback = rng.uniform(0.0, 2.0) if rng.random() < 0.3 else 0.0
      x = side * (xb + setback)
      if self.chance('vegetation_block'):
        n = max(3, int((z2 - z1) / 3.0))
        heights = rng.uniform(4.0, 10.0) * rng.uniform(0.8, 1.0, n)
        self.poly(self.wall_quad(x, z1, z2, 0.0, heights, n), VEGETATION,
                  _shade(_VEG_RGB, rng.uniform(0.75, 1.05)))
        continue
      height = rng.uniform(7.0, 26.0)
      rgb = _BUILDING_RGBS[rng.integers(len(_BUILDING_RGBS))]
      # The end face at z1 is seen from the road and lit less.
      self.poly(self.front_rect(x, x + side * 12.0, 0.0, height, z1), BUILDING, _shade(rgb, 0.7))
      self.poly(self.wall_quad(x, z1, z2, 0.0, height, 3), BUILDING, rgb)
      self.poly(self.wall_quad(x, z1, z2, height - 0.6, height, 3), BUILDING, _shade(rgb, 0.6))
      self.windows(x, z1, z2, height, rgb)

  def windows(self, x: float, z1: float, z2: float, height: float, rgb: Rgb) -> None:
    rng = self.rng
    if self.px(z1) < 1.5:
      return
    pitch_z, pitch_y = rng.uniform(2.5, 4.0), rng.uniform(2.8, 3.4)
    glass = _GLASS if rng.random() < 0.7 else _shade(rgb, 0.45)
    if rng.random() < 0.4:  # shop front
      self.poly(self.wall_quad(x, z1 + 0.5, z2 - 0.5, 0.3, 2.6), BUILDING, _shade(glass, 1.3))
    y = 3.5
    while y + 1.6 < height - 0.8:
      z = z1 + 0.8
      while z + 1.2 < z2 - 0.5 and self.px(z) * 1.2 > 1.0:
        self.poly(self.wall_quad(x, z, z + 1.2, y, y + 1.6), BUILDING, glass)
        z += pitch_z
      y += pitch_y

  def side_structures(self, side: int, inner: float, outer: float) -> None:
    """Walls, fences, hedges along the sidewalk's outer edge; guard rails at the kerb."""
    rng = self.rng
    for key, label in (('wall', WALL), ('fence', FENCE), ('hedge', VEGETATION)):
      if not self.chance(key):
        continue
      z1 = rng.uniform(1.0, 25.0)
      z2 = z1 + rng.uniform(10.0, 60.0)
      x = side * (outer - 0.1)
      if label == WALL:
        h = rng.uniform(1.0, 2.6)
        rgb = _WALL_RGBS[rng.integers(len(_WALL_RGBS))]
        self.poly(self.wall_quad(x, z1, z2, 0.0, h, 4), WALL, rgb)
        self.poly(self.wall_quad(x, z1, z2, h - 0.2, h, 4), WALL, _shade(rgb, 0.75))
      elif label == FENCE:
        h = rng.uniform(1.0, 2.0)
        rgb = _FENCE_RGBS[rng.integers(len(_FENCE_RGBS))]
        self.poly(self.wall_quad(x, z1, z2, 0.0, h, 4), FENCE, rgb)
        for y in (0.3 * h, 0.9 * h):  # rails
          self.poly(self.wall_quad(x, z1, z2, y - 0.06, y + 0.06, 4), FENCE, _shade(rgb, 0.6))
        z = z1
        while z < z2 and self.px(z) * 0.12 > 0.4:
          self.poly(self.wall_quad(x, z, z + 0.12, 0.0, h + 0.1), FENCE, _shade(rgb, 0.55))
          z += 2.0
      else:
        self.poly(self.wall_quad(x, z1, z2, 0.0, rng.uniform(0.8, 1.6, 6), 6), VEGETATION,
                  _shade(_VEG_RGB, 0.8))
    if self.chance('guard_rail'):
      x = side * (inner + 0.1)
      self.poly(self.wall_quad(x, 2.0, 120.0, 0.45, 0.8, 4), GUARD_RAIL, (170, 175, 180))

  def street_furniture(self, sides: dict[int, tuple[float, float, float]]) -> None:
    rng = self.rng
    for kind, key in (('light', 'lights'), ('sign', 'signs'), ('lamp', 'lamps')):
      for _ in range(self.poisson(key)):
        side = int(rng.choice((-1, 1)))
        self.pole(kind, side * (sides[side][0] + 0.5), rng.uniform(4.0, 45.0), side)
    for side in (-1, 1):
      inner, outer, _ = sides[side]
      if self.chance('trees'):
        z = rng.uniform(3.0, 10.0)
        step = rng.uniform(7.0, 14.0)
        while z < 70.0:
          self.tree(side * (outer - 0.8), z)
          z += step * rng.uniform(0.8, 1.2)
      for _ in range(self.poisson('static')):
        z = rng.uniform(4.0, 40.0)
        x = side * rng.uniform(inner + 0.6, outer - 0.4)
        rgb = (70, 90, 70) if rng.random() < 0.5 else (150, 120, 90)
        prims = []
        self.poly(self.front_rect(x - 0.3, x + 0.3, 0.0, rng.uniform(0.8, 1.2), z), STATIC, rgb,
                  prims)
        self.add_object(z, prims)

  def pole(self, kind: str, x: float, z: float, side: int) -> None:
    rng = self.rng
    prims = []
    grey = _shade((125, 125, 135), rng.uniform(0.8, 1.2))
    height = {'light': rng.uniform(3.2, 4.5), 'sign': rng.uniform(2.4, 3.2),
              'lamp': rng.uniform(6.0, 8.5)}[kind]
    self.poly(self.front_rect(x - 0.09, x + 0.09, 0.0, height, z), POLE, grey, prims)
    s = self.px(z)
    if kind == 'lamp' or (kind == 'light' and rng.random() < 0.35):
      arm = rng.uniform(2.0, 4.5)
      tip = x - side * arm
      self.poly(self.front_rect(min(x, tip), max(x, tip), height - 0.12, height, z), POLE, grey,
                prims)
      if kind == 'lamp':
        self.poly(self.front_rect(tip - 0.35, tip + 0.35, height - 0.25, height, z), POLE,
                  (210, 210, 190), prims)
      else:
        self.traffic_light(tip, height - 0.1, z, prims)
    if kind == 'light':
      self.traffic_light(x, height, z, prims)
    if kind == 'sign' or (kind == 'light' and rng.random() < 0.4):
      y = height - 0.4 if kind == 'sign' else 2.3
      self.sign(x, y, z, s, prims)
    self.add_object(z, prims)

  def traffic_light(self, x: float, y_top: float, z: float, prims: list) -> None:
    self.poly(self.front_rect(x - 0.18, x + 0.18, y_top - 0.95, y_top, z), LIGHT, _DARK, prims)
    s = self.px(z)
    lit = int(self.rng.integers(3))
    for i, rgb in enumerate(((230, 30, 30), (240, 180, 20), (40, 220, 80))):
      cu, cv = self.proj(x, y_top - 0.18 - 0.3 * i, z)
      self.ellipse(cu, cv, 0.1 * s, 0.1 * s, LIGHT, rgb if i == lit else _shade(rgb, 0.3), prims)

  def sign(self, x: float, y: float, z: float, s: float, prims: list) -> None:
    rng = self.rng
    shape = int(rng.integers(4))
    r = rng.uniform(0.3, 0.45)
    cu, cv = self.proj(x, y, z)
    rad = r * s
    if shape == 0:  # round prohibitory: red ring, white inside
      self.ellipse(cu, cv, rad, rad, SIGN, (220, 30, 30), prims)
      self.ellipse(cu, cv, 0.7 * rad, 0.7 * rad, SIGN, (245, 245, 245), prims)
    elif shape == 1:  # round mandatory: blue
      self.ellipse(cu, cv, rad, rad, SIGN, (30, 80, 210), prims)
    elif shape == 2:  # warning triangle
      tri = [(cu, cv - rad), (cu + rad, cv + 0.8 * rad), (cu - rad, cv + 0.8 * rad)]
      self.poly(tri, SIGN, (220, 30, 30), prims)
      self.poly([(cu + 0.55 * (a - cu), cv + 0.55 * (b - cv) + 0.1 * rad) for a, b in tri], SIGN,
                (245, 245, 245), prims)
    else:  # direction board
      self.poly([(cu - 1.4 * rad, cv - 0.7 * rad), (cu + 1.4 * rad, cv - 0.7 * rad),
                 (cu + 1.4 * rad, cv + 0.7 * rad), (cu - 1.4 * rad, cv + 0.7 * rad)], SIGN,
                (245, 205, 30) if rng.random() < 0.5 else (30, 110, 60), prims)

  def tree(self, x: float, z: float) -> None:
    rng = self.rng
    prims = []
    trunk_h = rng.uniform(2.0, 3.5)
    self.poly(self.front_rect(x - 0.15, x + 0.15, 0.0, trunk_h + 0.5, z), VEGETATION,
              (95, 70, 45), prims)
    s = self.px(z)
    r = rng.uniform(1.3, 2.6)
    for _ in range(int(rng.integers(4, 7))):
      cu, cv = self.proj(x + rng.uniform(-0.6, 0.6) * r, trunk_h + r * rng.uniform(0.6, 1.5), z)
      rr = r * rng.uniform(0.6, 1.0) * s
      self.ellipse(cu, cv, rr, rr * rng.uniform(0.8, 1.1), VEGETATION,
                   _shade(_VEG_RGB, rng.uniform(0.7, 1.15)), prims)
    self.add_object(z, prims)

  def traffic(self, sides: dict[int, tuple[float, float, float]]) -> None:
    rng = self.rng
    lanes = [-self.wr + _LANE * (i + 0.5) for i in range(self.lanes)]
    occupied: list[tuple[float, float, float]] = []  # (xr, z1, z2)

    def place(x: float, length: float, z_lo: float, z_hi: float) -> float | None:
      for _ in range(8):
        z = rng.uniform(z_lo, z_hi)
        if all(abs(x - ox) > 1.5 or z + length + 1.0 < oz1 or z > oz2 + 1.0
               for ox, oz1, oz2 in occupied):
          occupied.append((x, z, z + length))
          return z
      return None

    kinds = ([CAR] * self.poisson('cars') + [TRUCK] * self.poisson('trucks') +
             [BUS] * self.poisson('buses') + [TRAIN] * int(self.chance('trains')))
    for kind in kinds:
      x = lanes[rng.integers(len(lanes))] + rng.uniform(-0.3, 0.3)
      if kind == TRAIN:
        x = rng.uniform(-0.5, 0.5)
      z = place(x, 4.5, 4.0, 70.0)
      if z is not None:
        self.vehicle(kind, x, z, oncoming=x < 0)
    for _ in range(self.poisson('parked')):
      side = int(rng.choice((-1, 1)))
      x = side * (self.wr - 1.1)
      z = place(x, 4.5, 3.0, 60.0)
      if z is not None:
        self.vehicle(CAR, x, z, oncoming=side < 0)
    # People on sidewalks, some crossing the road.
    n_crossing = self.poisson('crossing')
    for i in range(max(1, self.poisson('persons'))):
      side = int(rng.choice((-1, 1)))
      inner, outer, _ = sides[side]
      if i < n_crossing:
        x = rng.uniform(-self.wr, self.wr)
      else:
        x = side * rng.uniform(inner + 0.4, outer - 0.3)
      z = rng.uniform(4.0, 40.0)
      prims = []
      u, v = self.proj(x, 0.0, z)
      self.person(u, v, rng.uniform(1.55, 1.95) * self.px(z), PERSON, prims)
      self.add_object(z, prims)
    for _ in range(self.poisson('riders')):  # on the road, along the kerb
      kind = MOTORCYCLE if rng.random() < 0.25 else BICYCLE
      x = rng.choice((-1, 1)) * (self.wr - rng.uniform(0.6, 1.6))
      self.two_wheeler(kind, x, rng.uniform(5.0, 35.0), ridden=True)
    for key, kind in (('bikes', BICYCLE), ('motos', MOTORCYCLE)):  # parked on the sidewalk
      for _ in range(self.poisson(key)):
        side = int(rng.choice((-1, 1)))
        inner, outer, _ = sides[side]
        x = side * rng.uniform(inner + 0.5, outer - 0.4)
        self.two_wheeler(kind, x, rng.uniform(5.0, 35.0), ridden=False)

  def vehicle(self, kind: int, x: float, z: float, oncoming: bool) -> None:
    rng = self.rng
    w, h, length = {CAR: (1.8, 1.5, 4.4), TRUCK: (2.5, 3.4, 8.0), BUS: (2.55, 3.1, 12.0),
                    TRAIN: (2.65, 3.6, 28.0)}[kind]
    k = rng.uniform(0.92, 1.08)
    w, h, length = w * k, h * rng.uniform(0.9, 1.1), length * k
    if kind == BUS:
      rgb = ((200, 30, 30), (240, 200, 30), (30, 90, 190), (235, 235, 235))[rng.integers(4)]
    elif kind == TRAIN:
      rgb = ((240, 240, 240), (200, 40, 40), (240, 210, 40))[rng.integers(3)]
    else:
      rgb = _VEHICLE_RGBS[rng.integers(len(_VEHICLE_RGBS))]
    prims = []
    lower = 0.25 if kind == CAR else 0.45
    # Side face: the one towards the camera axis, if the car is off-axis.
    x_cam = x + self.x0 + self.bend * z * z
    if abs(x_cam) > w / 2:
      xs = x - math.copysign(w / 2, x_cam)
      if kind == CAR:
        profile = [(0.0, lower), (0.0, 0.6), (0.22, 0.62), (0.32, 1.0), (0.75, 1.0),
                   (0.85, 0.62), (1.0, 0.58), (1.0, lower)]
      else:
        profile = [(0.0, lower), (0.0, 1.0), (1.0, 1.0), (1.0, lower)]
      self.poly([self.proj(xs, b * h, z + a * length) for a, b in profile], kind,
                _shade(rgb, 0.8), prims)
      if kind in (BUS, TRAIN):
        self.poly(self.wall_quad(xs, z + 0.5, z + length - 0.5, 0.55 * h, 0.85 * h, 3), kind,
                  _GLASS, prims)
      elif kind == CAR:
        self.poly(self.wall_quad(xs, z + 0.35 * length, z + 0.72 * length, 0.66 * h, 0.93 * h),
                  kind, _GLASS, prims)
      for a in ((0.18, 0.82) if kind == CAR else (0.12, 0.5, 0.88)):
        zc = z + a * length
        cu, cv = self.proj(xs, 0.35, zc)
        ru = abs(self.proj(xs, 0.0, zc + 0.35)[0] - self.proj(xs, 0.0, zc - 0.35)[0]) / 2
        self.ellipse(cu, cv, ru, 0.35 * self.px(zc), kind, _DARK, prims)
    # Rear (or front) face at depth z.
    a, b = x - w / 2, x + w / 2
    if kind == CAR:
      pts = [(a, lower, 0), (a, 0.6 * h, 0), (x - 0.38 * w, h, 0), (x + 0.38 * w, h, 0),
             (b, 0.6 * h, 0), (b, lower, 0)]
      self.poly([self.proj(p, q, z) for p, q, _ in pts], kind, rgb, prims)
      self.poly([self.proj(p, q, z) for p, q in ((x - 0.36 * w, 0.64 * h),
                 (x + 0.36 * w, 0.64 * h), (x + 0.33 * w, 0.95 * h), (x - 0.33 * w, 0.95 * h))],
                kind, _GLASS, prims)
    else:
      self.poly(self.front_rect(a, b, lower, h, z), kind, rgb, prims)
      self.poly(self.front_rect(a + 0.15, b - 0.15, 0.6 * h, 0.9 * h, z), kind, _GLASS, prims)
    for p in (a, b - 0.3):  # wheels
      self.poly(self.front_rect(p, p + 0.3, 0.0, lower + 0.15, z), kind, _DARK, prims)
    lamp = (245, 245, 220) if oncoming else (220, 20, 20)
    for p in (a + 0.1, b - 0.35):
      self.poly(self.front_rect(p, p + 0.25, 0.45 * h, 0.53 * h, z), kind, lamp, prims)
    self.add_object(z, prims)

  def person(self, u: float, v: float, unit: float, label: int, prims: list,
             seated: bool = False) -> None:
    """A walking (or seated) person `unit` pixels tall with feet (or seat + leg) at pixel (u, v)."""
    rng = self.rng
    top = _CLOTH_RGBS[rng.integers(len(_CLOTH_RGBS))]
    legs = _CLOTH_RGBS[rng.integers(len(_CLOTH_RGBS))]
    skin = _SKIN_RGBS[rng.integers(len(_SKIN_RGBS))]
    hip = v - 0.5 * unit
    if seated:
      for dx in (-0.12, 0.1):
        self.line([(u, hip), (u + dx * unit, hip + 0.25 * unit), (u + 1.5 * dx * unit, v)],
                  0.08 * unit, label, legs, prims)
    else:
      stride = rng.uniform(0.0, 0.14)
      for sgn in (-1, 1):
        self.line([(u + sgn * 0.04 * unit, hip), (u + sgn * stride * unit, v)], 0.09 * unit,
                  label, legs, prims)
    lean = 0.08 * unit if seated else 0.0
    shoulder = v - 0.82 * unit
    self.poly([(u - 0.12 * unit, hip), (u + 0.12 * unit, hip), (u + 0.13 * unit + lean, shoulder),
               (u - 0.13 * unit + lean, shoulder)], label, top, prims)
    for sgn in (-1, 1):  # arms
      self.line([(u + sgn * 0.13 * unit + lean, shoulder + 0.02 * unit),
                 (u + sgn * 0.17 * unit + lean, v - 0.5 * unit)], 0.06 * unit, label, top, prims)
    self.ellipse(u + lean, v - 0.91 * unit, 0.065 * unit, 0.075 * unit, label, skin, prims)

  def two_wheeler(self, label: int, x: float, z: float, ridden: bool) -> None:
    """A bicycle or motorcycle seen from the side, optionally with a rider on it."""
    rng = self.rng
    prims = []
    s = self.px(z)
    u, v = self.proj(x, 0.0, z)
    length = (1.7 if label == BICYCLE else 2.0) * s
    r = (0.35 if label == BICYCLE else 0.32) * s
    direction = 1 if rng.random() < 0.5 else -1
    wheels = [u - direction * length / 2 + direction * r, u + direction * length / 2 - direction * r]
    rgb = _VEHICLE_RGBS[rng.integers(len(_VEHICLE_RGBS))]
    seat = (wheels[0] + direction * 0.25 * length, v - 2.6 * r)
    if label == BICYCLE:
      for cu in wheels:
        self.ellipse(cu, v - r, r, r, label, _DARK, prims, width=max(1, int(0.12 * s)))
      crank = (u, v - r)
      bar = (wheels[1] - direction * 0.1 * length, v - 2.9 * r)
      self.line([(wheels[0], v - r), crank, seat, (wheels[0], v - r)], 0.06 * s, label, rgb, prims)
      self.line([crank, bar, (wheels[1], v - r)], 0.06 * s, label, rgb, prims)
      self.line([seat, bar], 0.06 * s, label, rgb, prims)
    else:
      for cu in wheels:
        self.ellipse(cu, v - r, r, r, label, _DARK, prims)
      self.poly([(wheels[0], v - r), (wheels[0] + direction * 0.2 * length, v - 2.6 * r),
                 (wheels[1] - direction * 0.05 * length, v - 2.9 * r), (wheels[1], v - 1.6 * r),
                 (u, v - 0.9 * r)], label, rgb, prims)
    if ridden:
      unit = rng.uniform(1.6, 1.85) * s
      self.person(seat[0], seat[1] + 0.5 * unit, unit, RIDER, prims, seated=True)
    self.add_object(z, prims)

  def hood(self) -> None:
    """The ego vehicle's bonnet, as in Cityscapes (label id 1)."""
    depth = self.h * self.rng.uniform(0.07, 0.11)
    rgb = _shade((40, 45, 55), self.rng.uniform(0.8, 1.4))
    self.ellipse(self.w / 2, self.h + 1.6 * depth, 0.8 * self.w, 2.6 * depth, EGO_VEHICLE, rgb,
                 self.prims)


# --- rendering ------------------------------------------------------------------------------------
def scene_rng(seed: int, domain: str, split: str, index: int) -> np.random.Generator:
  """The generator of one image: a function of (seed, domain, split, index) only."""
  return np.random.default_rng([seed, _DOMAIN_CODES[domain], _SPLIT_CODES[split], index])


def _colour_matrix(style: Style) -> np.ndarray:
  """3x3 map of white balance @ saturation @ hue rotation (about the grey axis)."""
  t = math.radians(style.hue_deg)
  k = np.full((3, 3), 1.0 / 3.0)
  cross = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3.0)
  hue = math.cos(t) * np.eye(3) + math.sin(t) * cross + (1 - math.cos(t)) * k
  luma = np.tile([[0.299, 0.587, 0.114]], (3, 1))
  sat = style.saturation * np.eye(3) + (1 - style.saturation) * luma
  return np.diag(style.white_balance) @ sat @ hue


def _lut(values: dict[int, Any], default, width: int | None = None) -> np.ndarray:
  shape = (256,) if width is None else (256, width)
  lut = np.empty(shape, np.float32)
  lut[...] = default
  for key, value in values.items():
    lut[key] = value
  return lut


def _finish(image: np.ndarray, label: np.ndarray, style: Style, rng: np.random.Generator,
            horizon: float) -> np.ndarray:
  """Domain look on a flat-shaded [H, W, 3] uint8 render; returns [H, W, 3] uint8."""
  h, w = label.shape
  x = image.astype(np.float32)
  rows = np.arange(h, dtype=np.float32)[:, None, None]
  cols = np.arange(w, dtype=np.float32)[None, :, None]
  # Sky lightens towards the horizon (both domains: clean lighting is still lighting).
  sky_gain = 0.8 + 0.35 * np.clip(rows / max(horizon, 1.0), 0.0, 1.0)
  x = np.where((label == SKY)[..., None], x * sky_gain, x)
  if style.class_gain:
    x *= _lut(style.class_gain, 1.0, 3)[label]
  if style.texture or style.texture_default:
    coarse = rng.standard_normal((h // 6 + 2, w // 6 + 2)).astype(np.float32)
    low = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))
    high = rng.standard_normal((h, w)).astype(np.float32)
    amp = _lut(style.texture, style.texture_default)[label]
    x += (amp * (0.7 * low + 0.5 * high))[..., None]
    x *= 1.0 + 0.12 * rng.uniform(-1, 1) * (cols / w - 0.5)  # side light
  x *= rng.uniform(0.85, 1.15)  # exposure varies from picture to picture in every domain
  x = x @ _colour_matrix(style).T.astype(np.float32)
  x = 128.0 + style.contrast * (x - 128.0) + style.brightness
  if style.haze:
    near_horizon = np.exp(-np.abs(rows - horizon) / (0.18 * h))
    x += style.haze * near_horizon * (np.array([205.0, 210.0, 215.0], np.float32) - x)
  if style.vignette:
    r2 = ((rows / h - 0.5) ** 2 + (cols / w - 0.5) ** 2) / 0.5
    x *= 1.0 - style.vignette * r2
  x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
  if style.blur:  # lens blur, then sensor noise on top of it
    x = np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(style.blur)))
  if style.noise:
    noisy = x + style.noise * rng.standard_normal(x.shape, dtype=np.float32)
    x = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
  return x


def render_scene(domain: str, rng: np.random.Generator,
                 size: tuple[int, int] = (128, 256)) -> tuple[np.ndarray, np.ndarray]:
  """Draws one scene of `domain` ('gta5' | 'cityscapes' | 'bdd100k').

  Returns (image uint8 [H, W, 3] RGB, label uint8 [H, W] of Cityscapes label ids).
  """
  if domain not in STYLES:
    raise ValueError(f'unknown synthetic domain {domain!r}; expected one of {sorted(STYLES)}')
  style = STYLES[domain]
  scene = _Scene(rng, style, size)
  scene.build()
  h, w = size
  label_img = Image.new('L', (w, h), SKY)
  image = Image.new('RGB', (w, h), _SKY_RGB)
  draw_label, draw_image = ImageDraw.Draw(label_img), ImageDraw.Draw(image)
  for kind, geom, lab, rgb, width in scene.prims:
    for draw, ink in ((draw_label, lab), (draw_image, rgb)):
      if kind == 'p':
        draw.polygon(geom, fill=ink)
      elif kind == 'l':
        draw.line(geom, fill=ink, width=width)
      elif width:
        draw.ellipse(geom, outline=ink, width=width)
      else:
        draw.ellipse(geom, fill=ink)
  label = np.asarray(label_img)
  return _finish(np.asarray(image), label, style, rng, scene.vh), label


# --- writing the official layouts -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Job:
  domain: str
  split: str
  index: int
  image_path: str
  label_path: str


def _bdd_name(seed: int, split: str, index: int) -> str:
  """A BDD100K-like name ('0a1b2c3d-4e5f6a7b'), unique per (seed, split, index)."""
  a, b = np.random.default_rng([seed, _DOMAIN_CODES['bdd100k'], _SPLIT_CODES[split], index,
                                7]).integers(0, 2**32, 2)
  return f'{int(a):08x}-{int(b):08x}'


def _jobs(out: str, params: dict[str, Any]) -> list[_Job]:
  seed = params['seed']
  jobs = []
  gta = os.path.join(out, 'gta5')
  for i in range(params['num_source']):
    name = f'{i + 1:05d}.png'
    jobs.append(_Job('gta5', 'train', i, os.path.join(gta, 'images', name),
                     os.path.join(gta, 'labels', name)))
  cs = os.path.join(out, 'cityscapes')
  for split, n in (('train', params['num_target_train']), ('val', params['num_target_val'])):
    cities = CITYSCAPES_CITIES[split]
    for i in range(n):
      city = cities[i % len(cities)]
      stem = f'{city}_{i // len(cities):06d}_000019'
      jobs.append(_Job('cityscapes', split, i,
                       os.path.join(cs, 'leftImg8bit', split, city, f'{stem}_leftImg8bit.png'),
                       os.path.join(cs, 'gtFine', split, city, f'{stem}_gtFine_labelIds.png')))
  if params['bdd']:
    bdd = os.path.join(out, 'bdd100k')
    for split, n in (('train', params['num_bdd_train']), ('val', params['num_bdd_val'])):
      for i in range(n):
        name = _bdd_name(seed, split, i)
        jobs.append(_Job('bdd100k', split, i,
                         os.path.join(bdd, 'images', '10k', split, f'{name}.jpg'),
                         os.path.join(bdd, 'labels', 'sem_seg', 'masks', split, f'{name}.png')))
  return jobs


def _write(job: _Job, seed: int, size: tuple[int, int]) -> None:
  image, label = render_scene(job.domain, scene_rng(seed, job.domain, job.split, job.index), size)
  for path in (job.image_path, job.label_path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  if job.domain == 'bdd100k':
    # BDD100K ships JPEG images and masks already in train ids (255 = ignore).
    Image.fromarray(image).save(job.image_path, quality=85)
    Image.fromarray(labels.ID_TO_TRAIN_ID[label]).save(job.label_path)
  elif job.domain == 'gta5':
    Image.fromarray(image).save(job.image_path)
    label_img = Image.fromarray(label).convert('P')
    label_img.putpalette(_GTA5_PALETTE)
    label_img.save(job.label_path)
  else:
    Image.fromarray(image).save(job.image_path)
    Image.fromarray(label).save(job.label_path)


def _write_all(jobs: list[_Job], seed: int, size: tuple[int, int]) -> None:
  for job in jobs:
    _write(job, seed, size)


def generate(out_dir: str, *, seed: int = 0, size: tuple[int, int] = (128, 256),
             num_source: int = 300, num_target_train: int = 300, num_target_val: int = 100,
             bdd: bool = False, num_bdd_train: int = 100, num_bdd_val: int = 50,
             overwrite: bool = False, num_workers: int = 1) -> dict[str, str]:
  """Writes the synthetic datasets under `out_dir` and returns {dataset name: root folder}.

  Roots: 'gta5' and 'cityscapes', plus 'bdd100k' when `bdd`. `size` is (H, W). A complete tree
  drawn with the same parameters (recorded in `synthetic_manifest.json`) is reused as is; on any
  mismatch the three dataset folders are removed and redrawn. `num_workers > 1` draws in
  subprocesses; the bytes do not depend on it.
  """
  h, w = (int(v) for v in size)
  counts = dict(num_source=num_source, num_target_train=num_target_train,
                num_target_val=num_target_val, num_bdd_train=num_bdd_train,
                num_bdd_val=num_bdd_val)
  if h < 32 or w < 32 or any(int(v) < 0 for v in counts.values()):
    raise ValueError(f'synthetic.generate: need size >= (32, 32) and counts >= 0, got size={size} '
                     f'and {counts}')
  params = dict(version=GENERATOR_VERSION, seed=int(seed), size=[h, w], bdd=bool(bdd),
                **{k: int(v) for k, v in counts.items()})
  out_dir = os.path.abspath(out_dir)
  roots = {'gta5': os.path.join(out_dir, 'gta5'), 'cityscapes': os.path.join(out_dir, 'cityscapes')}
  if bdd:
    roots['bdd100k'] = os.path.join(out_dir, 'bdd100k')
  jobs = _jobs(out_dir, params)
  manifest_path = os.path.join(out_dir, MANIFEST_NAME)
  manifest = None
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      manifest = json.load(f)
  if (not overwrite and manifest is not None and manifest.get('params') == params and
      all(os.path.exists(j.image_path) and os.path.exists(j.label_path) for j in jobs)):
    return roots
  trees = [os.path.join(out_dir, name) for name in ('gta5', 'cityscapes', 'bdd100k')]
  if manifest is None and not overwrite and any(os.path.exists(t) for t in trees):
    raise FileExistsError(f'{out_dir} holds gta5/cityscapes/bdd100k folders without '
                          f'{MANIFEST_NAME}; refusing to replace them (pass overwrite=True)')
  if os.path.exists(manifest_path):
    os.remove(manifest_path)  # the tree is incomplete until the manifest is written again
  for tree in trees:
    shutil.rmtree(tree, ignore_errors=True)
  if num_workers > 1 and len(jobs) > 1:
    import concurrent.futures  # pylint: disable=g-import-not-at-top
    import multiprocessing  # pylint: disable=g-import-not-at-top
    chunks = [jobs[i::num_workers] for i in range(num_workers)]
    # Spawned (not forked) workers: the parent may hold JAX's threads.
    with concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=multiprocessing.get_context('spawn')) as pool:
      for future in [pool.submit(_write_all, chunk, seed, (h, w)) for chunk in chunks]:
        future.result()
  else:
    _write_all(jobs, seed, (h, w))
  files = {name: sum(j.domain == name for j in jobs) for name in roots}
  with open(manifest_path, 'w') as f:
    json.dump({'params': params, 'images': files, 'roots': roots}, f, indent=2, sort_keys=True)
  return roots


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      description='Draw the synthetic GTA5 -> Cityscapes (-> BDD100K) pair in the official layouts.')
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--height', type=int, default=128)
  parser.add_argument('--width', type=int, default=256)
  parser.add_argument('--num-source', type=int, default=300)
  parser.add_argument('--num-target-train', type=int, default=300)
  parser.add_argument('--num-target-val', type=int, default=100)
  parser.add_argument('--bdd', action='store_true', help='also write a BDD100K-style target')
  parser.add_argument('--num-bdd-train', type=int, default=100)
  parser.add_argument('--num-bdd-val', type=int, default=50)
  parser.add_argument('--overwrite', action='store_true')
  parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1))
  args = parser.parse_args(argv)
  start = time.time()
  roots = generate(args.out, seed=args.seed, size=(args.height, args.width),
                   num_source=args.num_source, num_target_train=args.num_target_train,
                   num_target_val=args.num_target_val, bdd=args.bdd,
                   num_bdd_train=args.num_bdd_train, num_bdd_val=args.num_bdd_val,
                   overwrite=args.overwrite, num_workers=args.workers)
  for name, root in roots.items():
    print(f'{name}: {root}')
  print(f'done in {time.time() - start:.1f}s')


if __name__ == '__main__':
  main()
