"""SYNTHIA-RAND-CITYSCAPES (Ros et al., CVPR 2016): 9,400 synthetic 1280x760 frames whose label
PNGs hold the SYNTHIA class id in channel 0 of a 16-bit-per-channel image.

DiGA's official code trains on every image of the set (its `synthia_list/train.txt` lists
0000000.png .. 0009399.png) and reads labels with FreeImage, keeping channel 0. Pillow opens such
PNGs but reduces each 16-bit sample to its high byte, which is 0 for every class id, so
`read_label` decodes the file twice through Pillow's own PNG decoder, once per byte of the
big-endian samples (about 40 ms per 1280x760 label). The builder stores channel 0 as an 8-bit PNG
of SYNTHIA ids (0..22; any id from 255 up is stored as 255, ignored), read like every other
dataset's id map and mapped by `labels.LABEL_SETS` (19 classes, or DiGA's 16).
"""

import io
import pathlib

import numpy as np
from PIL import Image

from dakd_jax import errors
from dakd_jax.data import labels
from dakd_jax.data.builders import official

# 16-bit PNG colour type -> (Pillow's raw mode for the high bytes, for the low bytes). Pillow
# decodes 16-bit grey (colour type 0) as 'I;16', every bit kept, so it needs no second pass.
_SIXTEEN_BIT_RAW_MODES = {2: ('RGB;16B', 'RGB;16L'), 6: ('RGBA;16B', 'RGBA;16L')}
_COLOUR_TYPES = {0: 'grey', 2: 'RGB', 3: 'palette', 4: 'grey+alpha', 6: 'RGBA'}


def _decode(path, raw_mode: str | None = None) -> np.ndarray:
  """The PNG decoded by Pillow, optionally with another raw mode of the same sample layout.

  The raw mode is the argument of the PNG's one 'zip' tile (Pillow 10-13); tests compare every
  bit of the result with the written samples, so a Pillow that changes this shows there.
  """
  with Image.open(path) as image:
    if raw_mode is not None:
      tile, = image.tile  # One zlib stream per PNG frame.
      image.tile = [tile._replace(args=raw_mode)]
    image.load()
    return np.asarray(image)


def read_label(path) -> np.ndarray:
  """A SYNTHIA label PNG's channel 0, the class id: uint16 [H, W] (every bit kept).

  Accepts 16-bit RGB, RGBA (the official files) and grey PNGs; anything else is a one-line
  `errors.UserError` naming the file and what it is.
  """
  path = pathlib.Path(path)
  with open(path, 'rb') as f:
    header = f.read(26)  # Signature, then the IHDR chunk up to its colour type.
  if header[:8] != b'\x89PNG\r\n\x1a\n' or header[12:16] != b'IHDR':
    raise errors.UserError(f'SYNTHIA label {path} is not a PNG file')
  depth, colour_type = header[24], header[25]
  if depth != 16 or colour_type not in (0, *_SIXTEEN_BIT_RAW_MODES):
    raise errors.UserError(
        f'SYNTHIA label {path} is a PNG of {depth}-bit {_COLOUR_TYPES.get(colour_type, "?")} '
        'samples; expected the 16-bit RGB(A) labels of GT/LABELS (class id in channel 0)')
  try:
    if colour_type == 0:
      return _decode(path).astype(np.uint16)
    high, low = (_decode(path, mode)[..., 0].astype(np.uint16)
                 for mode in _SIXTEEN_BIT_RAW_MODES[colour_type])
  except (OSError, SyntaxError, ValueError) as e:  # Truncated or corrupt data.
    raise errors.UserError(f'cannot decode SYNTHIA label {path}: {e}') from e
  return (high << 8) | low


def encode_ids(ids: np.ndarray) -> bytes:
  """uint16 SYNTHIA ids [H, W] -> an 8-bit grey PNG of them; ids from 255 up become 255."""
  ids8 = np.minimum(ids, labels.IGNORE_LABEL).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(ids8).save(buffer, format='PNG')
  return buffer.getvalue()


class Synthia(official.OfficialLayoutBuilder):
  """SYNTHIA-RAND-CITYSCAPES `RGB/*.png` with `GT/LABELS/*.png`; one 'train' split of every
  image (as DiGA trains). Labels are stored as 8-bit maps of SYNTHIA ids."""

  name = 'dakd_synthia'
  LABEL_SPACE = 'synthia_id'
  LAYOUT = ('<root>/RGB/NNNNNNN.png and <root>/GT/LABELS/NNNNNNN.png (16-bit PNGs, class id in '
            'channel 0)')
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download SYNTHIA-RAND-CITYSCAPES (RAND_CITYSCAPES.rar) from https://synthia-dataset.net/downloads/
  and extract it as <root>:
      <root>/RGB/0000000.png ... <root>/RGB/0009399.png             (1280x760 images)
      <root>/GT/LABELS/0000000.png ... <root>/GT/LABELS/0009399.png (16-bit, class id in channel 0)
  Preparing decodes every label once (about 40 ms each).
  """

  @classmethod
  def find_pairs(cls, root: pathlib.Path) -> dict[str, list[official.Pair]]:
    return {'train': [(p, root / 'GT' / 'LABELS' / p.name)
                      for p in sorted((root / 'RGB').glob('*.png'))]}

  def label_record(self, label: pathlib.Path) -> bytes:
    """Channel 0 of the 16-bit label as an 8-bit PNG of SYNTHIA ids."""
    return encode_ids(read_label(label))
