"""Mapillary Vistas v1.2 (Neuhold et al., ICCV 2017): 18,000 train and 2,000 val street-level
images from all over the world (MuHDi's fourth domain), 66 classes."""

import pathlib

from dakd_jax.data import labels
from dakd_jax.data.builders import official

_SPLITS = {'train': 'training', 'val': 'validation'}  # the test split has no public labels


class Mapillary(official.OfficialLayoutBuilder):
  """Mapillary Vistas v1.2 JPEG images with their id maps (ids in the order of config.json).

  The ids are read in v1.2's order (`labels.MAPILLARY_SUPER`); v2.0's 124 classes differ.
  """

  name = 'dakd_mapillary'
  IMAGE_FORMAT = 'jpeg'
  LABEL_SPACE = 'mapillary_id'
  # MuHDi's loader fits images and labels into the size at their aspect ratio and pads; labels
  # with the last id ('Unlabeled', 65: ignored).
  PAD_LABEL = len(labels.MAPILLARY_SUPER) - 1
  LAYOUT = ('<root>/{training,validation}/images/<key>.jpg and '
            '<root>/{training,validation}/labels/<key>.png (v1.2)')
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Request Mapillary Vistas at https://www.mapillary.com/dataset/vistas and extract the v1.2
  archive as <root>:
      <root>/{training,validation}/images/<key>.jpg
      <root>/{training,validation}/labels/<key>.png    (v1.2 ids 0..65, config.json order)
  """

  @classmethod
  def find_pairs(cls, root: pathlib.Path) -> dict[str, list[official.Pair]]:
    return {split: [(p, root / folder / 'labels' / f'{p.stem}.png')
                    for p in sorted((root / folder / 'images').glob('*.jpg'))]
            for split, folder in _SPLITS.items()}
