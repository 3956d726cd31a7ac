"""Rendering one synthetic scene: its per-image generator, the rasterised primitives (labels
without anti-aliasing) and the domain's colour pipeline (`render_scene`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dakd_jax.data.synthetic.street import Street
from dakd_jax.data.synthetic.styles import SKY, SKY_RGB, STYLES, Style

DOMAIN_CODES = {'gta5': 0, 'cityscapes': 1, 'bdd100k': 2}
SPLIT_CODES = {'train': 0, 'val': 1}


def scene_rng(seed: int, domain: str, split: str, index: int) -> np.random.Generator:
  """The generator of one image: a function of (seed, domain, split, index) only."""
  return np.random.default_rng([seed, DOMAIN_CODES[domain], SPLIT_CODES[split], index])


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
  scene = Street(rng, style, size)
  scene.build()
  h, w = size
  label_img = Image.new('L', (w, h), SKY)
  image = Image.new('RGB', (w, h), SKY_RGB)
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

