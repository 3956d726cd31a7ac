"""Labelled picture grids: header columns, image rows kept exactly, every class in the legend."""

import numpy as np

from dakd_jax import pictures
from dakd_jax.data import labels as labels_lib


def _tile(colour, shape=(32, 64)):
  return np.broadcast_to(np.asarray(colour, np.uint8), shape + (3,)).copy()


def test_header_has_text_in_every_column_and_nothing_else():
  titles = ('input', 'ground truth', 'a rather long network name that wraps')
  header = pictures.header_row(titles, tile_width=96)
  assert header.shape[1] == 3 * 96
  inked = (header != 255).any(axis=(0, 2))
  for column in range(3):
    assert inked[column * 96:(column + 1) * 96].any(), column
  # The long title wraps onto more lines than a one-word title would need.
  assert header.shape[0] > pictures.header_row(('input',), tile_width=96).shape[0]


def test_legend_shows_every_class_colour():
  legend = pictures.legend(labels_lib.CLASS_NAMES, labels_lib.PALETTE, width=400)
  assert legend.shape[1] == 400
  colours = {tuple(c) for c in legend.reshape(-1, 3)}
  for colour in labels_lib.PALETTE:
    assert tuple(colour) in colours, colour


def test_grid_keeps_tiles_between_header_and_legend():
  rows = [[_tile((10, 20, 30)), _tile((40, 50, 60))], [_tile((70, 80, 90)), _tile((1, 2, 3))]]
  plain = pictures.picture_grid(rows, tile_width=64)
  assert plain.shape == (64, 128, 3)
  labelled = pictures.picture_grid(rows, tile_width=64, titles=('a', 'b'),
                                   class_names=labels_lib.CLASS_NAMES, palette=labels_lib.PALETTE)
  header = pictures.header_row(('a', 'b'), tile_width=64).shape[0]
  np.testing.assert_array_equal(labelled[header:header + 64], plain)
  assert labelled.shape[0] > header + 64  # the legend below


def test_rows_take_the_aspect_of_their_widest_tile():
  # An input resized to another aspect is shown at the labels' aspect.
  rows = [[_tile((0, 0, 0), (16, 16)), _tile((255, 0, 0), (32, 64))]]
  grid = pictures.picture_grid(rows, tile_width=64)
  assert grid.shape == (32, 128, 3)
