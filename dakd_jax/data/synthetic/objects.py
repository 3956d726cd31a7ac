"""The free-standing objects of a synthetic scene, each drawn on a `Canvas` and queued by depth:
poles (traffic lights, signs, lamps), trees, vehicles, people and two-wheelers."""

from __future__ import annotations

import math

from dakd_jax.data.synthetic.canvas import Canvas
from dakd_jax.data.synthetic.styles import (
    BICYCLE, BUS, CAR, CLOTH_RGBS, DARK, GLASS, LIGHT, POLE, RIDER, SIGN, SKIN_RGBS, TRAIN,
    TRUCK, VEG_RGB, VEGETATION, VEHICLE_RGBS, shade)


def pole(c: Canvas, kind: str, x: float, z: float, side: int) -> None:
  """A pole at (x, z) on the `side` (-1 left, 1 right) sidewalk: `kind` 'light' (with a traffic
  light, sometimes on an arm, sometimes a sign), 'sign' or 'lamp' (a street lamp on an arm)."""
  rng = c.rng
  prims = []
  grey = shade((125, 125, 135), rng.uniform(0.8, 1.2))
  height = {'light': rng.uniform(3.2, 4.5), 'sign': rng.uniform(2.4, 3.2),
            'lamp': rng.uniform(6.0, 8.5)}[kind]
  c.poly(c.front_rect(x - 0.09, x + 0.09, 0.0, height, z), POLE, grey, prims)
  s = c.px(z)
  if kind == 'lamp' or (kind == 'light' and rng.random() < 0.35):
    arm = rng.uniform(2.0, 4.5)
    tip = x - side * arm
    c.poly(c.front_rect(min(x, tip), max(x, tip), height - 0.12, height, z), POLE, grey,
           prims)
    if kind == 'lamp':
      c.poly(c.front_rect(tip - 0.35, tip + 0.35, height - 0.25, height, z), POLE,
             (210, 210, 190), prims)
    else:
      traffic_light(c, tip, height - 0.1, z, prims)
  if kind == 'light':
    traffic_light(c, x, height, z, prims)
  if kind == 'sign' or (kind == 'light' and rng.random() < 0.4):
    y = height - 0.4 if kind == 'sign' else 2.3
    sign(c, x, y, z, s, prims)
  c.add_object(z, prims)


def traffic_light(c: Canvas, x: float, y_top: float, z: float, prims: list) -> None:
  """A three-lamp traffic light hanging from `y_top` at (x, z), one lamp lit; into `prims`."""
  c.poly(c.front_rect(x - 0.18, x + 0.18, y_top - 0.95, y_top, z), LIGHT, DARK, prims)
  s = c.px(z)
  lit = int(c.rng.integers(3))
  for i, rgb in enumerate(((230, 30, 30), (240, 180, 20), (40, 220, 80))):
    cu, cv = c.proj(x, y_top - 0.18 - 0.3 * i, z)
    c.ellipse(cu, cv, 0.1 * s, 0.1 * s, LIGHT, rgb if i == lit else shade(rgb, 0.3), prims)


def sign(c: Canvas, x: float, y: float, z: float, s: float, prims: list) -> None:
  """A traffic sign centred at (x, y, z), `s` pixels per metre: prohibitory, mandatory, warning
  or direction board; into `prims`."""
  rng = c.rng
  shape = int(rng.integers(4))
  r = rng.uniform(0.3, 0.45)
  cu, cv = c.proj(x, y, z)
  rad = r * s
  if shape == 0:  # round prohibitory: red ring, white inside
    c.ellipse(cu, cv, rad, rad, SIGN, (220, 30, 30), prims)
    c.ellipse(cu, cv, 0.7 * rad, 0.7 * rad, SIGN, (245, 245, 245), prims)
  elif shape == 1:  # round mandatory: blue
    c.ellipse(cu, cv, rad, rad, SIGN, (30, 80, 210), prims)
  elif shape == 2:  # warning triangle
    tri = [(cu, cv - rad), (cu + rad, cv + 0.8 * rad), (cu - rad, cv + 0.8 * rad)]
    c.poly(tri, SIGN, (220, 30, 30), prims)
    c.poly([(cu + 0.55 * (a - cu), cv + 0.55 * (b - cv) + 0.1 * rad) for a, b in tri], SIGN,
           (245, 245, 245), prims)
  else:  # direction board
    c.poly([(cu - 1.4 * rad, cv - 0.7 * rad), (cu + 1.4 * rad, cv - 0.7 * rad),
            (cu + 1.4 * rad, cv + 0.7 * rad), (cu - 1.4 * rad, cv + 0.7 * rad)], SIGN,
           (245, 205, 30) if rng.random() < 0.5 else (30, 110, 60), prims)


def tree(c: Canvas, x: float, z: float) -> None:
  """A tree at (x, z): a trunk and 4-6 overlapping crown ellipses."""
  rng = c.rng
  prims = []
  trunk_h = rng.uniform(2.0, 3.5)
  c.poly(c.front_rect(x - 0.15, x + 0.15, 0.0, trunk_h + 0.5, z), VEGETATION,
         (95, 70, 45), prims)
  s = c.px(z)
  r = rng.uniform(1.3, 2.6)
  for _ in range(int(rng.integers(4, 7))):
    cu, cv = c.proj(x + rng.uniform(-0.6, 0.6) * r, trunk_h + r * rng.uniform(0.6, 1.5), z)
    rr = r * rng.uniform(0.6, 1.0) * s
    c.ellipse(cu, cv, rr, rr * rng.uniform(0.8, 1.1), VEGETATION,
              shade(VEG_RGB, rng.uniform(0.7, 1.15)), prims)
  c.add_object(z, prims)
def vehicle(c: Canvas, kind: int, x: float, z: float, oncoming: bool) -> None:
  """A car, truck, bus or train (`kind`, a label id) with its rear (or front, `oncoming`) at
  depth z in the lane at x, and its side face when it is off the camera axis."""
  rng = c.rng
  w, h, length = {CAR: (1.8, 1.5, 4.4), TRUCK: (2.5, 3.4, 8.0), BUS: (2.55, 3.1, 12.0),
                  TRAIN: (2.65, 3.6, 28.0)}[kind]
  k = rng.uniform(0.92, 1.08)
  w, h, length = w * k, h * rng.uniform(0.9, 1.1), length * k
  if kind == BUS:
    rgb = ((200, 30, 30), (240, 200, 30), (30, 90, 190), (235, 235, 235))[rng.integers(4)]
  elif kind == TRAIN:
    rgb = ((240, 240, 240), (200, 40, 40), (240, 210, 40))[rng.integers(3)]
  else:
    rgb = VEHICLE_RGBS[rng.integers(len(VEHICLE_RGBS))]
  prims = []
  lower = 0.25 if kind == CAR else 0.45
  # Side face: the one towards the camera axis, if the car is off-axis.
  x_cam = x + c.x0 + c.bend * z * z
  if abs(x_cam) > w / 2:
    xs = x - math.copysign(w / 2, x_cam)
    if kind == CAR:
      profile = [(0.0, lower), (0.0, 0.6), (0.22, 0.62), (0.32, 1.0), (0.75, 1.0),
                 (0.85, 0.62), (1.0, 0.58), (1.0, lower)]
    else:
      profile = [(0.0, lower), (0.0, 1.0), (1.0, 1.0), (1.0, lower)]
    c.poly([c.proj(xs, b * h, z + a * length) for a, b in profile], kind,
           shade(rgb, 0.8), prims)
    if kind in (BUS, TRAIN):
      c.poly(c.wall_quad(xs, z + 0.5, z + length - 0.5, 0.55 * h, 0.85 * h, 3), kind,
             GLASS, prims)
    elif kind == CAR:
      c.poly(c.wall_quad(xs, z + 0.35 * length, z + 0.72 * length, 0.66 * h, 0.93 * h),
             kind, GLASS, prims)
    for a in ((0.18, 0.82) if kind == CAR else (0.12, 0.5, 0.88)):
      zc = z + a * length
      cu, cv = c.proj(xs, 0.35, zc)
      ru = abs(c.proj(xs, 0.0, zc + 0.35)[0] - c.proj(xs, 0.0, zc - 0.35)[0]) / 2
      c.ellipse(cu, cv, ru, 0.35 * c.px(zc), kind, DARK, prims)
  # Rear (or front) face at depth z.
  a, b = x - w / 2, x + w / 2
  if kind == CAR:
    pts = [(a, lower, 0), (a, 0.6 * h, 0), (x - 0.38 * w, h, 0), (x + 0.38 * w, h, 0),
           (b, 0.6 * h, 0), (b, lower, 0)]
    c.poly([c.proj(p, q, z) for p, q, _ in pts], kind, rgb, prims)
    window = ((x - 0.36 * w, 0.64 * h), (x + 0.36 * w, 0.64 * h), (x + 0.33 * w, 0.95 * h),
              (x - 0.33 * w, 0.95 * h))
    c.poly([c.proj(p, q, z) for p, q in window], kind, GLASS, prims)
  else:
    c.poly(c.front_rect(a, b, lower, h, z), kind, rgb, prims)
    c.poly(c.front_rect(a + 0.15, b - 0.15, 0.6 * h, 0.9 * h, z), kind, GLASS, prims)
  for p in (a, b - 0.3):  # wheels
    c.poly(c.front_rect(p, p + 0.3, 0.0, lower + 0.15, z), kind, DARK, prims)
  lamp = (245, 245, 220) if oncoming else (220, 20, 20)
  for p in (a + 0.1, b - 0.35):
    c.poly(c.front_rect(p, p + 0.25, 0.45 * h, 0.53 * h, z), kind, lamp, prims)
  c.add_object(z, prims)


def person(c: Canvas, u: float, v: float, unit: float, label: int, prims: list,
           seated: bool = False) -> None:
  """A walking (or seated) person `unit` pixels tall with feet (or seat + leg) at pixel (u, v)."""
  rng = c.rng
  top = CLOTH_RGBS[rng.integers(len(CLOTH_RGBS))]
  legs = CLOTH_RGBS[rng.integers(len(CLOTH_RGBS))]
  skin = SKIN_RGBS[rng.integers(len(SKIN_RGBS))]
  hip = v - 0.5 * unit
  if seated:
    for dx in (-0.12, 0.1):
      c.line([(u, hip), (u + dx * unit, hip + 0.25 * unit), (u + 1.5 * dx * unit, v)],
             0.08 * unit, label, legs, prims)
  else:
    stride = rng.uniform(0.0, 0.14)
    for sgn in (-1, 1):
      c.line([(u + sgn * 0.04 * unit, hip), (u + sgn * stride * unit, v)], 0.09 * unit,
             label, legs, prims)
  lean = 0.08 * unit if seated else 0.0
  shoulder = v - 0.82 * unit
  c.poly([(u - 0.12 * unit, hip), (u + 0.12 * unit, hip), (u + 0.13 * unit + lean, shoulder),
          (u - 0.13 * unit + lean, shoulder)], label, top, prims)
  for sgn in (-1, 1):  # arms
    c.line([(u + sgn * 0.13 * unit + lean, shoulder + 0.02 * unit),
            (u + sgn * 0.17 * unit + lean, v - 0.5 * unit)], 0.06 * unit, label, top, prims)
  c.ellipse(u + lean, v - 0.91 * unit, 0.065 * unit, 0.075 * unit, label, skin, prims)


def two_wheeler(c: Canvas, label: int, x: float, z: float, ridden: bool) -> None:
  """A bicycle or motorcycle seen from the side, optionally with a rider on it."""
  rng = c.rng
  prims = []
  s = c.px(z)
  u, v = c.proj(x, 0.0, z)
  length = (1.7 if label == BICYCLE else 2.0) * s
  r = (0.35 if label == BICYCLE else 0.32) * s
  direction = 1 if rng.random() < 0.5 else -1
  wheels = [u - direction * length / 2 + direction * r, u + direction * length / 2 - direction * r]
  rgb = VEHICLE_RGBS[rng.integers(len(VEHICLE_RGBS))]
  seat = (wheels[0] + direction * 0.25 * length, v - 2.6 * r)
  if label == BICYCLE:
    for cu in wheels:
      c.ellipse(cu, v - r, r, r, label, DARK, prims, width=max(1, int(0.12 * s)))
    crank = (u, v - r)
    bar = (wheels[1] - direction * 0.1 * length, v - 2.9 * r)
    c.line([(wheels[0], v - r), crank, seat, (wheels[0], v - r)], 0.06 * s, label, rgb, prims)
    c.line([crank, bar, (wheels[1], v - r)], 0.06 * s, label, rgb, prims)
    c.line([seat, bar], 0.06 * s, label, rgb, prims)
  else:
    for cu in wheels:
      c.ellipse(cu, v - r, r, r, label, DARK, prims)
    c.poly([(wheels[0], v - r), (wheels[0] + direction * 0.2 * length, v - 2.6 * r),
            (wheels[1] - direction * 0.05 * length, v - 2.9 * r), (wheels[1], v - 1.6 * r),
            (u, v - 0.9 * r)], label, rgb, prims)
  if ridden:
    unit = rng.uniform(1.6, 1.85) * s
    person(c, seat[0], seat[1] + 0.5 * unit, unit, RIDER, prims, seated=True)
  c.add_object(z, prims)
