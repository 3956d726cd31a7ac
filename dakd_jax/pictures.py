"""Labelled picture grids: a header row naming each column, image rows, a colour legend.

All pictures are uint8 RGB arrays `[H, W, 3]`. Text is drawn with Pillow's built-in font, so the
output does not depend on fonts installed on the machine.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
PAD = 4  # pixels around text and between legend entries


def _font():
  return ImageFont.load_default()


def _text_size(draw, text, font):
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  return right - left, bottom - top


def _wrap(draw, text, font, width):
  """Greedy word wrap of `text` into lines no wider than `width` pixels (long words kept whole)."""
  lines, line = [], ''
  for word in text.split():
    candidate = f'{line} {word}'.strip()
    if line and _text_size(draw, candidate, font)[0] > width:
      lines.append(line)
      line = word
    else:
      line = candidate
  return lines + [line] if line else lines


def _canvas(width, height):
  image = Image.new('RGB', (width, height), BACKGROUND)
  return image, ImageDraw.Draw(image)


def header_row(titles, tile_width):
  """A white strip `[h, len(titles) * tile_width, 3]` with each title wrapped and centred in its
  column; `h` fits the tallest wrapped title."""
  font = _font()
  _, draw = _canvas(1, 1)
  wrapped = [_wrap(draw, title, font, tile_width - 2 * PAD) for title in titles]
  line_height = _text_size(draw, 'Ag', font)[1] + 2
  height = max(len(lines) for lines in wrapped) * line_height + 2 * PAD
  image, draw = _canvas(len(titles) * tile_width, height)
  for column, lines in enumerate(wrapped):
    for i, line in enumerate(lines):
      x = column * tile_width + (tile_width - _text_size(draw, line, font)[0]) // 2
      draw.text((x, PAD + i * line_height), line, fill=INK, font=font)
  return np.asarray(image)


def legend(names, palette, width):
  """A white strip `[h, width, 3]` of colour swatches with class names, flowing left to right.

  Args:
    names: class names, one per palette row.
    palette: `[num_classes, 3]` uint8 RGB colours.
    width: strip width in pixels.
  """
  font = _font()
  _, draw = _canvas(1, 1)
  swatch = _text_size(draw, 'Ag', font)[1] + 2
  entries = [(name, tuple(int(c) for c in colour), swatch + PAD + _text_size(draw, name, font)[0])
             for name, colour in zip(names, palette)]
  positions, x, y = [], PAD, PAD
  for _, _, entry_width in entries:
    if x > PAD and x + entry_width > width - PAD:
      x, y = PAD, y + swatch + PAD
    positions.append((x, y))
    x += entry_width + 3 * PAD
  image, draw = _canvas(width, y + swatch + PAD)
  for (name, colour, _), (x, y) in zip(entries, positions):
    draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=colour, outline=INK)
    draw.text((x + swatch + PAD, y), name, fill=INK, font=font)
  return np.asarray(image)


def _fit_row(row, tile_width):
  """Resizes (nearest) every tile to `tile_width` and the aspect of the row's widest tile (the
  full-resolution labels: the input may have been resized to another aspect); concatenates."""
  h, w = max((t.shape[:2] for t in row), key=lambda hw: hw[1])
  size = (tile_width, max(1, round(h * tile_width / w)))
  return np.concatenate([np.asarray(Image.fromarray(t).resize(size, Image.NEAREST))
                         for t in row], axis=1)


def picture_grid(rows, tile_width=256, *, titles=None, class_names=None, palette=None):
  """Stacks rows of RGB tiles into one image, optionally under a header and over a legend.

  Args:
    rows: lists of uint8 `[H, W, 3]` tiles (any sizes), one list per image.
    tile_width: width of every column in pixels.
    titles: one name per column; adds a header row.
    class_names, palette: `[num_classes]` names and `[num_classes, 3]` colours; adds a legend.
  """
  strips = [_fit_row(row, tile_width) for row in rows]
  width = max(strip.shape[1] for strip in strips)
  if titles is not None:
    strips.insert(0, header_row(titles, tile_width))
  if class_names is not None:
    strips.append(legend(class_names, palette, width))
  strips = [np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=255)
            for s in strips]
  return np.concatenate(strips, axis=0)
