"""What `python -m dakd_jax.predict` reads: an image file, a folder of images, or a video file.

Every input becomes an `Item`: the name its outputs take (a relative path without extension) and
a `read()` that returns a decoded PIL RGB image or raises `ValueError` / `OSError` with a
one-line message naming the file (the caller counts and skips it). Names mirror the input:
  a file                      -> its stem ('frankfurt_000000_000294_leftImg8bit')
  a folder (recursively)      -> the path below it ('frankfurt/frankfurt_000000_000294_leftImg8bit')
  a video                     -> '<stem>/<stem>_<frame index, 6 digits>'
Videos are decoded with imageio (and its pyav / ffmpeg plugin), an optional dependency: without
it a video input is a usage error that says what to install.
"""

import dataclasses
import os
import pathlib
from typing import Callable, Iterable, Optional

import numpy as np
from PIL import Image

from dakd_jax import errors
from dakd_jax.data import transforms

IMAGE_SUFFIXES = frozenset(('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm'))
VIDEO_SUFFIXES = frozenset(('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg'))
# What a failing video decoder raises (imageio, pyav and ffmpeg wrap their errors in these).
_DECODER_ERRORS = (OSError, ValueError, RuntimeError)


@dataclasses.dataclass(frozen=True)
class Item:
  """One input image: `name` (output path stem), `source` (for messages), `read` (-> PIL RGB)."""
  name: str
  source: str
  read: Callable[[], Image.Image]


def read_image(path: str) -> Image.Image:
  """Decodes an image file as the evaluation does (`transforms.decode_rgb`)."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise OSError(f'cannot read image {path}: {e.strerror or e}') from None
  return transforms.decode_rgb(data, path)


def _image_item(path: pathlib.Path, name: str) -> Item:
  return Item(name, str(path), lambda: read_image(str(path)))


def _folder_items(root: pathlib.Path) -> list[Item]:
  files = sorted(p for p in root.rglob('*') if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
  if not files:
    raise errors.UserError(
        f'--input {root}: no images ({", ".join(sorted(IMAGE_SUFFIXES))}) in the '
        'folder or below it')
  items, seen = [], {}
  for path in files:
    name = path.relative_to(root).with_suffix('').as_posix()
    if name in seen:
      raise errors.UserError(
          f'--input {root}: {seen[name]} and {path} would write the same outputs '
          f'({name}.png); rename one')
    seen[name] = path
    items.append(_image_item(path, name))
  return items


def _failed(message: str) -> Callable[[], Image.Image]:
  def read():
    raise ValueError(message)
  return read


def _video_items(path: pathlib.Path) -> Iterable[Item]:
  """The frames of a video (decoded lazily, in order); checks now that a decoder is installed."""
  try:
    import imageio.v3 as iio  # pylint: disable=g-import-not-at-top  (optional dependency)
  except ImportError:
    raise errors.UserError(
        f'--input {path}: reading videos needs imageio with a video plugin (pip '
        'install imageio av), which is not installed; or extract the frames to a '
        'folder of images') from None
  return _frames(iio.imiter, path)


def _frames(imiter, path: pathlib.Path) -> Iterable[Item]:
  """Items of `imiter(path)`'s frames; a decoding failure ends the video as one unreadable item."""
  stem, index = path.stem, 0
  try:
    for frame in imiter(path):
      rgb = Image.fromarray(np.asarray(frame)).convert('RGB')
      yield Item(f'{stem}/{stem}_{index:06d}', f'{path} frame {index}', lambda rgb=rgb: rgb)
      index += 1
  except _DECODER_ERRORS as e:
    message = f'cannot decode video {path} after {index} frames: {e}'.replace('\n', ' ')
    yield Item(f'{stem}/{stem}_{index:06d}', f'{path} frame {index}', _failed(message))


def find_inputs(path: str) -> tuple[Iterable[Item], Optional[int]]:
  """The items of `--input path` and their number (None for a video: unknown before decoding).

  Raises `errors.UserError` for a missing path, a folder without images, or a video without a
  decoder.
  """
  if not os.path.exists(path):
    raise errors.UserError(
        f'--input {path}: no such file or directory; expected an image, a folder of '
        'images or a video')
  p = pathlib.Path(path)
  if p.is_dir():
    items = _folder_items(p)
    return items, len(items)
  if p.suffix.lower() in VIDEO_SUFFIXES:
    return _video_items(p), None
  return [_image_item(p, p.stem)], 1
