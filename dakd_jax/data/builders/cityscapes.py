"""Cityscapes fine annotations (Cordts et al.): 2,975 train and 500 val images, 2048x1024."""

import pathlib

from dakd_jax.data.builders import official

_SPLITS = ('train', 'val')  # the test split has no public labels


class Cityscapes(official.OfficialLayoutBuilder):
  """Cityscapes `leftImg8bit` images with `gtFine_labelIds` labels; splits 'train' and 'val'."""

  # Not 'cityscapes': TFDS ships a builder of that name (reading the zips, with TensorFlow).
  name = 'dakd_cityscapes'
  LABEL_SPACE = 'label_id'
  LAYOUT = ('<root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png and '
            '<root>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png')
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Log in at https://www.cityscapes-dataset.com/downloads/ and download leftImg8bit_trainvaltest.zip
  and gtFine_trainvaltest.zip. Extract both into one folder (the `manual_dir`, the config's `root`):
      <root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
      <root>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
  """

  @classmethod
  def find_pairs(cls, root: pathlib.Path) -> dict[str, list[official.Pair]]:
    splits = {}
    for split in _SPLITS:
      images = sorted((root / 'leftImg8bit' / split).glob('*/*_leftImg8bit.png'))
      splits[split] = [(p, root / 'gtFine' / split / p.parent.name /
                        p.name.replace('_leftImg8bit.png', '_gtFine_labelIds.png'))
                       for p in images]
    return splits
