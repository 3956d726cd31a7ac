"""How each synthetic domain looks: the label ids drawn, the camera, object frequencies and colour
pipeline of every domain (`STYLES`), and the canonical (source) palette the others derive from."""

from __future__ import annotations

import dataclasses

# Cityscapes label ids of what the generator draws (the table itself lives in `labels`).
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN = 7, 8, 11, 12, 13, 17, 19, 20
VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS = 21, 22, 23, 24, 25, 26, 27, 28
TRAIN, MOTORCYCLE, BICYCLE = 31, 32, 33
# Void label ids the generator also draws, so that the id -> train id map (to 255) is exercised.
EGO_VEHICLE, STATIC, PARKING, GUARD_RAIL = 1, 4, 9, 14

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
ROAD_RGB = (92, 90, 104)
SIDEWALK_RGB = (196, 170, 150)
TERRAIN_RGB = (150, 196, 72)
SKY_RGB = (90, 160, 250)
VEG_RGB = (50, 160, 40)
BUILDING_RGBS = ((205, 120, 80), (175, 175, 200), (225, 205, 140), (150, 95, 70), (230, 230, 215),
                 (120, 140, 170), (190, 70, 60))
WALL_RGBS = ((205, 195, 170), (170, 160, 150), (215, 180, 140))
FENCE_RGBS = ((160, 115, 60), (110, 130, 120), (150, 150, 160))
VEHICLE_RGBS = ((220, 30, 30), (30, 60, 200), (240, 240, 240), (30, 30, 35), (160, 165, 175),
                (240, 200, 20), (40, 140, 60), (120, 30, 110), (210, 110, 30))
CLOTH_RGBS = ((200, 40, 40), (40, 60, 170), (30, 30, 30), (230, 230, 230), (60, 130, 60),
              (210, 170, 60), (120, 70, 140), (90, 90, 100), (170, 120, 80))
SKIN_RGBS = ((240, 200, 170), (200, 150, 110), (140, 95, 60), (90, 60, 40))
DARK = (25, 25, 30)
GLASS = (60, 75, 95)


def shade(rgb: Rgb, k: float) -> Rgb:
  return (rgb[0] * k, rgb[1] * k, rgb[2] * k)

