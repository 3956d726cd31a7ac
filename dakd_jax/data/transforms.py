"""Decoding and preprocessing as grain transforms (Pillow + NumPy, no TensorFlow).

The default chain reproduces the official UDA loaders: resize to a fixed size (PIL BICUBIC for
images, NEAREST for labels), RGB->BGR, float 0..255 minus the Caffe mean; labels mapped to train
ids (255 = ignore). Random scale / crop / flip are optional and off by default, as in the released
code, where the flags exist but the dataset classes ignore them.

Elements between transforms are dicts. Up to `ToArrays` they hold PIL images ('image' RGB,
'label' single-channel ids in the dataset's own id space); after it NumPy arrays: 'image' float32
[H, W, 3] (HWC), 'label' int32 [H, W] train ids.
"""

import dataclasses
import io
import logging
import threading

import grain
import numpy as np
from PIL import Image

from dakd_jax import errors
from dakd_jax.data import labels

# Caffe-style mean in B, G, R order on 0..255 values (AdaptSegNet/ADVENT/DAKD).
CAFFE_MEAN_BGR = np.array((104.00698793, 116.66876762, 122.67891434), dtype=np.float32)
IMAGENET_MEAN_RGB = np.array((0.485, 0.456, 0.406), dtype=np.float32)
IMAGENET_STD_RGB = np.array((0.229, 0.224, 0.225), dtype=np.float32)
_LABEL_MODES = ('L', 'P')  # 8-bit id maps; GTA5 ships palette ('P') PNGs whose indices are ids


DIGA_SCALE = 128.0  # DiGA divides the Caffe-normalised image by 128 (inputs about [-1, 1]).
_MODES = "'caffe', 'diga' or 'imagenet'"


def normalize(image: np.ndarray, mode: str) -> np.ndarray:
  """uint8 RGB [..., 3] -> float32 [..., 3]: 'caffe' (BGR, 0..255 minus mean), 'diga' (the same
  divided by 128) or 'imagenet'."""
  if mode in ('caffe', 'diga'):
    caffe = image[..., ::-1].astype(np.float32) - CAFFE_MEAN_BGR
    return caffe / DIGA_SCALE if mode == 'diga' else caffe
  if mode == 'imagenet':
    return (image.astype(np.float32) / 255.0 - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB
  raise ValueError(f'normalization: expected {_MODES}, got {mode!r}')


def denormalize(image: np.ndarray, mode: str) -> np.ndarray:
  """Inverse of `normalize` for display: float32 [..., 3] -> uint8 RGB [..., 3] (rounded, clipped)."""
  if mode in ('caffe', 'diga'):
    rgb = (image * (DIGA_SCALE if mode == 'diga' else 1.0) + CAFFE_MEAN_BGR)[..., ::-1]
  elif mode == 'imagenet':
    rgb = (image * IMAGENET_STD_RGB + IMAGENET_MEAN_RGB) * 255.0
  else:
    raise ValueError(f'normalization: expected {_MODES}, got {mode!r}')
  return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def _open(data: bytes, file: str, what: str) -> Image.Image:
  """Decodes encoded bytes fully (so truncation surfaces here), naming the file on failure."""
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except (OSError, SyntaxError, ValueError) as e:
    raise errors.UserError(f'cannot decode {what} {file}: {e}') from e
  return image


def decode_rgb(data: bytes, file: str) -> Image.Image:
  """Encoded image bytes -> a fully decoded PIL RGB image; one-line ValueError naming `file`."""
  image = _open(data, file, 'image')
  return image if image.mode == 'RGB' else image.convert('RGB')


def resize_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
  """Resizes an image to `size` = (H, W) with PIL BICUBIC (the official loaders' resize)."""
  return image.resize(_wh(size), Image.BICUBIC)


class SkippedFiles:
  """The examples a training stream left out because they do not decode (thread-safe).

  Each is named in one warning line the first time it is met (a stream repeats its split).
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._reasons: dict[str, str] = {}

  def add(self, name: str, reason: str) -> None:
    with self._lock:
      if name in self._reasons:
        return
      self._reasons[name] = reason
      count = len(self._reasons)
    logging.warning('skipped (%d so far): %s', count, reason)

  def listing(self) -> dict[str, str]:
    """`{example name: the one-line reason}`, in the order they were met."""
    with self._lock:
      return dict(self._reasons)


@dataclasses.dataclass(frozen=True)
class Decode(grain.transforms.Map):
  """A stored record (encoded bytes, see builders/official.py) -> PIL 'image', 'label', 'name'.

  `allow_size_mismatch`: resize a label whose size differs from its image to the image size with
  NEAREST (GTA5; the builder logged how many pairs are affected when it prepared the data);
  otherwise a mismatch is an error naming both files.
  `skipped`: an example that does not decode becomes None (grain leaves it out of the batches) and
  is recorded there; without it, it raises a one-line `errors.UserError` naming the file.
  `pseudo_labels`: a directory whose `<name>.png` replaces the record's label: an 8-bit id map
  (label set ids, 255 = ignore; `labels.CLASS_ID`) of the image's size, as
  `dakd_jax.offline.write_pseudo_labels` writes them. (Read here rather than by a transform of
  its own: grain seeds the random transforms by their depth in the chain, and the stream's random
  draws stay those of the same stream without pseudo-labels.)
  """
  allow_size_mismatch: bool = False
  skipped: SkippedFiles | None = None
  pseudo_labels: str = ''

  def map(self, record: dict) -> dict | None:
    if self.skipped is None:
      return self._decode(record)
    try:
      return self._decode(record)
    except errors.UserError as e:
      self.skipped.add(_text(record['name']), str(e))
      return None

  def _decode(self, record: dict) -> dict:
    image_file, label_file = _text(record['image_file']), _text(record['label_file'])
    image = decode_rgb(record['image'], image_file)
    if self.pseudo_labels:
      return {'image': image, 'label': self._pseudo_label(_text(record['name']), image),
              'name': _text(record['name'])}
    label = _open(record['label'], label_file, 'label')
    if label.mode not in _LABEL_MODES:
      raise errors.UserError(f'label {label_file} has mode {label.mode}; expected a single-channel '
                             f'8-bit id map (mode L or P)')
    if label.size != image.size:
      if not self.allow_size_mismatch:
        raise errors.UserError(f'image {image_file} is {image.size[0]}x{image.size[1]} but label '
                               f'{label_file} is {label.size[0]}x{label.size[1]} (width x height)')
      label = label.resize(image.size, Image.NEAREST)
    return {'image': image, 'label': label, 'name': _text(record['name'])}

  def _pseudo_label(self, name: str, image: Image.Image) -> Image.Image:
    path = f'{self.pseudo_labels}/{name}.png'
    try:
      with open(path, 'rb') as f:
        label = _open(f.read(), path, 'pseudo-label')
    except FileNotFoundError:
      raise errors.UserError(f'{path}: no pseudo-label for image {name}; the directory holds '
                             'another split\'s labels') from None
    if label.mode not in _LABEL_MODES or label.size != image.size:
      raise errors.UserError(
          f'pseudo-label {path} is a {label.size[0]}x{label.size[1]} {label.mode} image; expected '
          f'an 8-bit id map of its image\'s size, {image.size[0]}x{image.size[1]} (width x '
          'height)')
    return label


@dataclasses.dataclass(frozen=True)
class Resize(grain.transforms.Map):
  """Resizes the image (BICUBIC) to `image_size` and the label (NEAREST) to `label_size`.

  Sizes are (H, W); None leaves that element at its size. With `pad_label` set, each is resized
  keeping its aspect ratio to fit the size and padded at the bottom/right (`resize_with_pad`):
  the image with black, the label with `pad_label` (MuHDi's Mapillary loader).
  """
  image_size: tuple[int, int] | None
  label_size: tuple[int, int] | None
  pad_label: int | None = None

  def map(self, element: dict) -> dict:
    out = dict(element)
    fit = self.pad_label is not None
    if self.image_size is not None:
      out['image'] = (resize_with_pad(element['image'], self.image_size, Image.BICUBIC, 0) if fit
                      else resize_image(element['image'], self.image_size))
    if self.label_size is not None:
      out['label'] = (
          resize_with_pad(element['label'], self.label_size, Image.NEAREST, self.pad_label)
          if fit else element['label'].resize(_wh(self.label_size), Image.NEAREST))
    elif fit and self.image_size is not None:  # Full-resolution labels, padded like the image.
      out['label'] = pad_to_aspect(element['label'], self.image_size, self.pad_label)
    return out


@dataclasses.dataclass(frozen=True)
class CycledResize(grain.transforms.MapWithIndex):
  """`Resize` of example k (image and label) to `sizes[k % len(sizes)]` (DiGA's batches of images
  at two sizes: 1 resized to 720x1280 and 2 kept at full resolution, then cropped alike)."""
  sizes: tuple[tuple[int, int], ...]
  pad_label: int | None = None

  def map_with_index(self, index: int, element: dict) -> dict:
    size = self.sizes[index % len(self.sizes)]
    return Resize(size, size, self.pad_label).map(element)


def _pad(image: Image.Image, canvas: tuple[int, int], fill: int) -> Image.Image:
  """`image` at the top-left of a `canvas` = (width, height) filled with `fill` (grey) or
  (fill, fill, fill)."""
  padded = Image.new(image.mode, canvas, fill if image.mode in ('L', 'P') else (fill,) * 3)
  if image.mode == 'P':
    padded.putpalette(image.getpalette())
  padded.paste(image, (0, 0))
  return padded


def pad_to_aspect(label: Image.Image, size: tuple[int, int], fill: int) -> Image.Image:
  """`label` padded with `fill` at the bottom or the right to the aspect ratio of `size` = (H, W),
  at its own resolution (MuHDi's `pad_with_fixed_AS`, sides truncated to integers)."""
  ratio, width, height = size[1] / size[0], float(label.width), float(label.height)
  if ratio > width / height:
    width = ratio * height
  elif ratio < width / height:
    height = width / ratio
  return _pad(label, (int(width), int(height)), fill)


def resize_with_pad(image: Image.Image, size: tuple[int, int], resample: int,
                    fill: int) -> Image.Image:
  """`image` resized with `resample` to fit `size` = (H, W) at its own aspect ratio, then padded
  with `fill` at the bottom or the right to exactly `size` (the side that does not fit is
  truncated to an integer, as MuHDi's `resize_with_pad`)."""
  height, width = size
  if image.width / image.height > width / height:
    fitted = (width, int(image.height * (width / image.width)))
  else:
    fitted = (int(image.width * (height / image.height)), height)
  return _pad(image.resize(fitted, resample), (width, height), fill)


def _wh(size: tuple[int, int]) -> tuple[int, int]:
  """(H, W) -> PIL's (width, height)."""
  return int(size[1]), int(size[0])


@dataclasses.dataclass(frozen=True)
class RandomScale(grain.transforms.RandomMap):
  """Rescales image and label by a factor drawn uniformly from `scale_range` = (lo, hi); with
  `per_axis` one factor for the width and another for the height (DiGA)."""
  scale_range: tuple[float, float]
  per_axis: bool = False

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    sw = rng.uniform(*self.scale_range)
    sh = rng.uniform(*self.scale_range) if self.per_axis else sw
    w, h = element['image'].size
    wh = (max(1, round(w * sw)), max(1, round(h * sh)))
    return dict(element, image=element['image'].resize(wh, Image.BICUBIC),
                label=element['label'].resize(wh, Image.NEAREST))


@dataclasses.dataclass(frozen=True)
class ToArrays(grain.transforms.Map):
  """PIL image/label -> float32 normalised image [H, W, 3] and int32 train-id label [H, W]."""
  normalization: str
  label_space: str  # 'label_id' | 'train_id' | 'idd_id' | 'mapillary_id' | 'synthia_id'
  num_classes: int = 19  # The label set (labels.LABEL_SETS).
  keep_name: bool = False

  def map(self, element: dict) -> dict:
    out = {'image': normalize(np.asarray(element['image']), self.normalization),
           'label': labels.to_train_ids(np.asarray(element['label']), self.label_space,
                                        self.num_classes)}
    if self.keep_name:
      out['name'] = element['name']
    return out


def informative_crop(label: np.ndarray) -> bool:
  """DiGA's crop test: at least 3 label values each cover > 2% of the crop, or exactly 2 do and
  the ignore value is not one of them."""
  values, counts = np.unique(label, return_counts=True)
  major = values[counts > 0.02 * label.size]
  return len(major) >= 3 or (len(major) == 2 and labels.IGNORE_LABEL not in major)


@dataclasses.dataclass(frozen=True)
class RandomCropFlip(grain.transforms.RandomMap):
  """Random crop to `crop` = (H, W) (or None) and random horizontal flip (p = 0.5) on arrays.

  Inputs smaller than the crop are padded at the bottom/right: the image with 0 (the mean colour
  after normalisation), the label with 255 (ignore). With `redraws` > 0 a crop failing
  `informative_crop` is drawn again, at most `redraws` more times (DiGA's source loader: 5).
  """
  crop: tuple[int, int] | None
  flip: bool
  redraws: int = 0

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    image, label = element['image'], element['label']
    if self.crop is not None:
      ch, cw = int(self.crop[0]), int(self.crop[1])
      ph, pw = max(ch - image.shape[0], 0), max(cw - image.shape[1], 0)
      if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        label = np.pad(label, ((0, ph), (0, pw)), constant_values=labels.IGNORE_LABEL)
      for attempt in range(self.redraws + 1):
        y = rng.integers(0, image.shape[0] - ch + 1)
        x = rng.integers(0, image.shape[1] - cw + 1)
        if attempt == self.redraws or informative_crop(label[y:y + ch, x:x + cw]):
          break
      image, label = image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]
    if self.flip and rng.random() < 0.5:
      image, label = image[:, ::-1], label[:, ::-1]
    return dict(element, image=np.ascontiguousarray(image), label=np.ascontiguousarray(label))
