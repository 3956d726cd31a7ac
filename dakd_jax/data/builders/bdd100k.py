"""BDD100K semantic segmentation, 10K set (Yu et al.): 7,000 train and 1,000 val images, 1280x720."""

import pathlib

from dakd_jax.data.builders import official

_SPLITS = ('train', 'val')


class Bdd100k(official.OfficialLayoutBuilder):
  """BDD100K 10K images with train-id masks (0..18, 255 = ignore); splits 'train' and 'val'.

  Two official layouts exist: the current one (`bdd100k_images_10k.zip` +
  `bdd100k_sem_seg_labels_trainval.zip`) and the older `bdd100k_seg.zip`. The current one wins
  when both are present.
  """

  name = 'dakd_bdd100k'
  IMAGE_FORMAT = 'jpeg'
  LABEL_SPACE = 'train_id'
  LAYOUT = ('<root>/images/10k/{train,val}/<name>.jpg with <root>/labels/sem_seg/masks/{train,val}/'
            '<name>.png, or <root>/seg/images/{train,val}/<name>.jpg with '
            '<root>/seg/labels/{train,val}/<name>_train_id.png')
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Register at https://bdd-data.berkeley.edu/ and download either
    (a) bdd100k_images_10k.zip and bdd100k_sem_seg_labels_trainval.zip, extracted into <root> so that
        <root>/images/10k/{train,val}/<name>.jpg and <root>/labels/sem_seg/masks/{train,val}/<name>.png
    (b) or the older bdd100k_seg.zip, extracted so that
        <root>/seg/images/{train,val}/<name>.jpg and <root>/seg/labels/{train,val}/<name>_train_id.png
  Masks hold train ids 0..18 (255 = ignore).
  """

  @classmethod
  def find_pairs(cls, root: pathlib.Path) -> dict[str, list[official.Pair]]:
    if (root / 'images' / '10k').is_dir():
      return {s: [(p, root / 'labels' / 'sem_seg' / 'masks' / s / f'{p.stem}.png')
                  for p in sorted((root / 'images' / '10k' / s).glob('*.jpg'))] for s in _SPLITS}
    return {s: [(p, root / 'seg' / 'labels' / s / f'{p.stem}_train_id.png')
                for p in sorted((root / 'seg' / 'images' / s).glob('*.jpg'))] for s in _SPLITS}
