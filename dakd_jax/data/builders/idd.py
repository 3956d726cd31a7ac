"""IDD, the India Driving Dataset segmentation part (Varma et al., WACV 2019): 6,993 train and
981 val images (MuHDi's third domain)."""

import pathlib

from dakd_jax.data.builders import official

_SPLITS = ('train', 'val')  # the test split has no public labels


class Idd(official.OfficialLayoutBuilder):
  """IDD `leftImg8bit` images with the `gtFine_labelids` maps its tools generate (ids 0..39)."""

  name = 'dakd_idd'
  LABEL_SPACE = 'idd_id'
  LAYOUT = ('<root>/leftImg8bit/{train,val}/<seq>/<frame>_leftImg8bit.png and '
            '<root>/gtFine/{train,val}/<seq>/<frame>_gtFine_labelids.png')
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Register at https://idd.insaan.iiit.ac.in/ and download the segmentation part
  (idd-segmentation.tar.gz); extract it as <root>. Its labels are polygons: generate the id maps
  with the dataset's public code (`preperation/createLabels.py --datadir <root> --id-type id`),
  which writes <root>/gtFine/{train,val}/<seq>/<frame>_gtFine_labelids.png next to
      <root>/leftImg8bit/{train,val}/<seq>/<frame>_leftImg8bit.png
  """

  @classmethod
  def find_pairs(cls, root: pathlib.Path) -> dict[str, list[official.Pair]]:
    return {split: [(p, root / 'gtFine' / split / p.parent.name /
                     p.name.replace('_leftImg8bit.png', '_gtFine_labelids.png'))
                    for p in sorted((root / 'leftImg8bit' / split).glob('*/*_leftImg8bit.png'))]
            for split in _SPLITS}
