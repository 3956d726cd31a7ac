"""Shared base of the TFDS builders that read an official, already extracted dataset folder.

Why this shape: TensorFlow must never be needed. The builders therefore yield file *paths* for
`tfds.features.Image` (TFDS stores the file bytes unchanged; re-encoding would need TensorFlow),
prepare with `file_format='array_record'`, and are read with `builder.as_data_source()` plus
`tfds.decode.SkipDecoding()` so that our own Pillow code decodes (with file names in errors).

Every example holds:
  image       the encoded image file (PNG or JPEG bytes)
  label       the encoded label PNG, in the dataset's own id space (`LABEL_SPACE`): the file's
              bytes, or an 8-bit PNG made from it (`label_record`, SYNTHIA)
  name        the image file stem, so predictions can be named after their inputs
  image_file, label_file   paths relative to the root, for error messages
"""

import abc
import hashlib
import logging
import pathlib

from PIL import Image
import tensorflow_datasets as tfds

from dakd_jax import errors

Pair = tuple[pathlib.Path, pathlib.Path]  # (image file, label file)


class OfficialLayoutBuilder(tfds.core.GeneratorBasedBuilder):
  """Reads `<manual_dir>` laid out as the dataset's official release; subclasses find the pairs."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  IMAGE_FORMAT = 'png'  # encoding of the image files: 'png' | 'jpeg'
  LABEL_SPACE = 'label_id'  # stored label values: 'label_id' (Cityscapes ids) | 'train_id'
  ALLOW_SIZE_MISMATCH = False  # GTA5 ships a few labels whose size differs from the image
  # Resizing keeps the aspect ratio and pads (`transforms.resize_with_pad`) with this stored
  # label value when set (Mapillary in MuHDi); None: a plain resize to the size.
  PAD_LABEL: int | None = None
  LAYOUT = ''  # the expected tree, one line, for error messages
  # Nothing is downloaded, so there is no checksums file next to the code. Saying so also skips
  # TFDS's probe of the code location, which imports `importlib_resources` (not installed).
  code_path = None

  @classmethod
  @abc.abstractmethod
  def find_pairs(cls, root: pathlib.Path) -> dict[str, list[Pair]]:
    """Returns {split: sorted [(image, label)]} for the splits present under `root`."""

  @classmethod
  def check_root(cls, root) -> dict[str, list[Pair]]:
    """`find_pairs` with one-line errors for a missing root, no images, or a missing label file."""
    root = pathlib.Path(root)
    if not root.is_dir():
      raise errors.MissingPathError(
          f'{cls.name}: root {root} does not exist; expected {cls.LAYOUT}')
    splits = {s: pairs for s, pairs in cls.find_pairs(root).items() if pairs}
    if not splits:
      raise errors.MissingPathError(
          f'{cls.name}: no images found under {root}; expected {cls.LAYOUT}')
    for pairs in splits.values():
      for image, label in pairs:
        if not label.is_file():
          raise errors.MissingPathError(f'{cls.name}: label {label} for image {image} is missing; '
                                        f'expected {cls.LAYOUT}')
    return splits

  @classmethod
  def fingerprint(cls, root, splits: dict[str, list[Pair]]) -> str:
    """sha256 over every pair's paths (relative to `root`), byte sizes and modification times:
    changes whenever a file is added, removed, replaced or edited."""
    digest = hashlib.sha256()
    root = pathlib.Path(root)
    for split in sorted(splits):
      for pair in splits[split]:
        for path in pair:
          stat = path.stat()
          digest.update(f'{split}|{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n'
                        .encode())
    return digest.hexdigest()

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format=self.IMAGE_FORMAT),
            'label': tfds.features.Image(shape=(None, None, 1), encoding_format='png'),
            'name': tfds.features.Text(),
            'image_file': tfds.features.Text(),
            'label_file': tfds.features.Text(),
        }),
        # Keep the sorted file order: evaluation is ordered, training shuffles in grain.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    root = pathlib.Path(dl_manager.manual_dir)
    splits = self.check_root(root)
    mismatches = sum(self._count_size_mismatches(pairs) for pairs in splits.values())
    if mismatches:
      logging.warning('%s: %d image/label pairs differ in size; the labels are resized to their '
                      'image with NEAREST at read time', self.name, mismatches)
    # Recorded so that a later `prepare` can tell which folder this data came from.
    self.info.metadata['root'] = str(root.resolve())
    self.info.metadata['fingerprint'] = self.fingerprint(root, splits)
    self.info.metadata['size_mismatches'] = mismatches
    return {split: self._generate_examples(root, pairs) for split, pairs in splits.items()}

  def _count_size_mismatches(self, pairs: list[Pair]) -> int:
    """Reads only the headers; raises on a mismatch unless ALLOW_SIZE_MISMATCH."""
    count = 0
    for image, label in pairs:
      with self._open_header(image) as im, self._open_header(label) as lb:
        if im.size != lb.size:
          if not self.ALLOW_SIZE_MISMATCH:
            raise errors.UserError(
                f'{self.name}: image {image} is {im.size[0]}x{im.size[1]} but label '
                f'{label} is {lb.size[0]}x{lb.size[1]} (width x height)')
          count += 1
    return count

  def _open_header(self, path: pathlib.Path) -> Image.Image:
    """The image file opened lazily (header only); a one-line error naming it if unreadable."""
    try:
      return Image.open(path)
    except (OSError, SyntaxError, ValueError) as e:
      raise errors.UserError(f'{self.name}: cannot read {path}: {e}') from e

  def label_record(self, label: pathlib.Path) -> pathlib.Path | bytes:
    """What the record stores as the label: the file itself (a path, its bytes copied as they
    are), or encoded PNG bytes derived from it (SYNTHIA's 16-bit labels)."""
    return label

  def _generate_examples(self, root: pathlib.Path, pairs: list[Pair]):
    for image, label in pairs:
      yield image.stem, {
          'image': image,  # a path: TFDS copies the bytes as they are
          'label': self.label_record(label),
          'name': image.stem,
          'image_file': str(image.relative_to(root)),
          'label_file': str(label.relative_to(root)),
      }
