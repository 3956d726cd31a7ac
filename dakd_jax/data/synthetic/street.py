"""The layout of one synthetic scene (`Street.build`): terrain, skyline, road and markings,
sidewalks, facades, walls and fences, street furniture, traffic and people, the ego bonnet."""

from __future__ import annotations

from dakd_jax.data.synthetic import objects
from dakd_jax.data.synthetic.canvas import LANE, Canvas
from dakd_jax.data.synthetic.styles import (
    BICYCLE, BUILDING, BUILDING_RGBS, BUS, CAR, EGO_VEHICLE, FENCE, FENCE_RGBS, GLASS, GUARD_RAIL,
    MOTORCYCLE, PARKING, PERSON, ROAD, ROAD_RGB, SIDEWALK, SIDEWALK_RGB, STATIC, TERRAIN,
    TERRAIN_RGB, TRAIN, TRUCK, VEG_RGB, VEGETATION, WALL, WALL_RGBS, Rgb, shade)


class Street(Canvas):
  """A road scene built far to near into `prims` (see `Canvas` for the coordinates)."""

  def build(self) -> None:
    """Draws the whole scene: the ground and skyline first, then the free objects far to near."""
    rng = self.rng
    z_near, z_far = 0.8, 260.0
    # Everything below the horizon starts as terrain; the skyline sits on it.
    self.poly([(-self.w, self.vh), (2 * self.w, self.vh), (2 * self.w, 3 * self.h),
               (-self.w, 3 * self.h)], TERRAIN, shade(TERRAIN_RGB, rng.uniform(0.85, 1.1)))
    self.skyline(z_far)
    self.poly(self.ground_strip(-self.wr, self.wr, z_near, z_far, 20), ROAD,
              shade(ROAD_RGB, rng.uniform(0.85, 1.1)))
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
                SIDEWALK_RGB)
      self.poly(self.ground_strip(side * x, side * (x + 0.25), z_near, z_far), SIDEWALK,
                shade(SIDEWALK_RGB, 0.75))  # kerb
      inner, outer = x, x + sw
      if self.chance('terrain'):
        tw = rng.uniform(1.0, 5.0)
        self.poly(self.ground_strip(side * outer, side * (outer + tw), z_near, z_far), TERRAIN,
                  shade(TERRAIN_RGB, rng.uniform(0.8, 1.15)))
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
        rgb = shade(BUILDING_RGBS[rng.integers(len(BUILDING_RGBS))], 0.85)
        self.poly(self.front_rect(x, x + width, -1.0, rng.uniform(6.0, 35.0), z), BUILDING, rgb)
      else:
        u0, v0 = self.proj(x, -1.0, z)
        u1, _ = self.proj(x + width, 0.0, z)
        tops = [(u0 + (u1 - u0) * i / 5, self.proj(0.0, y, z)[1])
                for i, y in enumerate(rng.uniform(5.0, 14.0, 6))]
        self.poly([(u0, v0)] + tops + [(u1, v0)], VEGETATION, shade(VEG_RGB, 0.8))
      x += width + (rng.uniform(0.0, 10.0) if rng.random() < 0.3 else 0.0)

  def road_markings(self) -> None:
    rng = self.rng
    white = (235, 235, 235)
    for i in range(1, self.lanes):
      xr = -self.wr + LANE * i
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
                  shade(VEG_RGB, rng.uniform(0.75, 1.05)))
        continue
      height = rng.uniform(7.0, 26.0)
      rgb = BUILDING_RGBS[rng.integers(len(BUILDING_RGBS))]
      # The end face at z1 is seen from the road and lit less.
      self.poly(self.front_rect(x, x + side * 12.0, 0.0, height, z1), BUILDING, shade(rgb, 0.7))
      self.poly(self.wall_quad(x, z1, z2, 0.0, height, 3), BUILDING, rgb)
      self.poly(self.wall_quad(x, z1, z2, height - 0.6, height, 3), BUILDING, shade(rgb, 0.6))
      self.windows(x, z1, z2, height, rgb)

  def windows(self, x: float, z1: float, z2: float, height: float, rgb: Rgb) -> None:
    rng = self.rng
    if self.px(z1) < 1.5:
      return
    pitch_z, pitch_y = rng.uniform(2.5, 4.0), rng.uniform(2.8, 3.4)
    glass = GLASS if rng.random() < 0.7 else shade(rgb, 0.45)
    if rng.random() < 0.4:  # shop front
      self.poly(self.wall_quad(x, z1 + 0.5, z2 - 0.5, 0.3, 2.6), BUILDING, shade(glass, 1.3))
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
        rgb = WALL_RGBS[rng.integers(len(WALL_RGBS))]
        self.poly(self.wall_quad(x, z1, z2, 0.0, h, 4), WALL, rgb)
        self.poly(self.wall_quad(x, z1, z2, h - 0.2, h, 4), WALL, shade(rgb, 0.75))
      elif label == FENCE:
        h = rng.uniform(1.0, 2.0)
        rgb = FENCE_RGBS[rng.integers(len(FENCE_RGBS))]
        self.poly(self.wall_quad(x, z1, z2, 0.0, h, 4), FENCE, rgb)
        for y in (0.3 * h, 0.9 * h):  # rails
          self.poly(self.wall_quad(x, z1, z2, y - 0.06, y + 0.06, 4), FENCE, shade(rgb, 0.6))
        z = z1
        while z < z2 and self.px(z) * 0.12 > 0.4:
          self.poly(self.wall_quad(x, z, z + 0.12, 0.0, h + 0.1), FENCE, shade(rgb, 0.55))
          z += 2.0
      else:
        self.poly(self.wall_quad(x, z1, z2, 0.0, rng.uniform(0.8, 1.6, 6), 6), VEGETATION,
                  shade(VEG_RGB, 0.8))
    if self.chance('guard_rail'):
      x = side * (inner + 0.1)
      self.poly(self.wall_quad(x, 2.0, 120.0, 0.45, 0.8, 4), GUARD_RAIL, (170, 175, 180))

  def street_furniture(self, sides: dict[int, tuple[float, float, float]]) -> None:
    rng = self.rng
    for kind, key in (('light', 'lights'), ('sign', 'signs'), ('lamp', 'lamps')):
      for _ in range(self.poisson(key)):
        side = int(rng.choice((-1, 1)))
        objects.pole(self, kind, side * (sides[side][0] + 0.5), rng.uniform(4.0, 45.0), side)
    for side in (-1, 1):
      inner, outer, _ = sides[side]
      if self.chance('trees'):
        z = rng.uniform(3.0, 10.0)
        step = rng.uniform(7.0, 14.0)
        while z < 70.0:
          objects.tree(self, side * (outer - 0.8), z)
          z += step * rng.uniform(0.8, 1.2)
      for _ in range(self.poisson('static')):
        z = rng.uniform(4.0, 40.0)
        x = side * rng.uniform(inner + 0.6, outer - 0.4)
        rgb = (70, 90, 70) if rng.random() < 0.5 else (150, 120, 90)
        prims = []
        self.poly(self.front_rect(x - 0.3, x + 0.3, 0.0, rng.uniform(0.8, 1.2), z), STATIC, rgb,
                  prims)
        self.add_object(z, prims)


  def traffic(self, sides: dict[int, tuple[float, float, float]]) -> None:
    rng = self.rng
    lanes = [-self.wr + LANE * (i + 0.5) for i in range(self.lanes)]
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
        objects.vehicle(self, kind, x, z, oncoming=x < 0)
    for _ in range(self.poisson('parked')):
      side = int(rng.choice((-1, 1)))
      x = side * (self.wr - 1.1)
      z = place(x, 4.5, 3.0, 60.0)
      if z is not None:
        objects.vehicle(self, CAR, x, z, oncoming=side < 0)
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
      objects.person(self, u, v, rng.uniform(1.55, 1.95) * self.px(z), PERSON, prims)
      self.add_object(z, prims)
    for _ in range(self.poisson('riders')):  # on the road, along the kerb
      kind = MOTORCYCLE if rng.random() < 0.25 else BICYCLE
      x = rng.choice((-1, 1)) * (self.wr - rng.uniform(0.6, 1.6))
      objects.two_wheeler(self, kind, x, rng.uniform(5.0, 35.0), ridden=True)
    for key, kind in (('bikes', BICYCLE), ('motos', MOTORCYCLE)):  # parked on the sidewalk
      for _ in range(self.poisson(key)):
        side = int(rng.choice((-1, 1)))
        inner, outer, _ = sides[side]
        x = side * rng.uniform(inner + 0.5, outer - 0.4)
        objects.two_wheeler(self, kind, x, rng.uniform(5.0, 35.0), ridden=False)

  def hood(self) -> None:
    """The ego vehicle's bonnet, as in Cityscapes (label id 1)."""
    depth = self.h * self.rng.uniform(0.07, 0.11)
    rgb = shade((40, 45, 55), self.rng.uniform(0.8, 1.4))
    self.ellipse(self.w / 2, self.h + 1.6 * depth, 0.8 * self.w, 2.6 * depth, EGO_VEHICLE, rgb,
                 self.prims)

