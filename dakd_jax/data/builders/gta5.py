"""GTA5 (Richter et al., "Playing for Data"): 24,966 synthetic frames with Cityscapes label ids."""

import pathlib

from dakd_jax.data.builders import official


class Gta5(official.OfficialLayoutBuilder):
  """GTA5 images with per-pixel Cityscapes label ids; one 'train' split of every image."""

  name = 'dakd_gta5'
  LABEL_SPACE = 'label_id'
  # A few official label maps are 1914x1046 for 1914x1052 images (CBST issue #5).
  ALLOW_SIZE_MISMATCH = True
  LAYOUT = '<root>/images/NNNNN.png and <root>/labels/NNNNN.png'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the ten image and label zips of GTA5 from https://download.visinf.tu-darmstadt.de/data/from_games/
  and extract them all into one folder (the `manual_dir`, passed as the config's `root`) so that it holds
      <root>/images/00001.png ... <root>/images/24966.png
      <root>/labels/00001.png ... <root>/labels/24966.png   (label PNGs hold Cityscapes label ids)
  """

  @classmethod
  def find_pairs(cls, root: pathlib.Path) -> dict[str, list[official.Pair]]:
    images = sorted((root / 'images').glob('*.png'))
    return {'train': [(p, root / 'labels' / p.name) for p in images]}
