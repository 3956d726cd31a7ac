"""MuHDi's data: the 7 super-class mappings against the official tables, and the IDD and Mapillary
Vistas builders on tiny folders written in their official layouts (read at 7 classes)."""

import sys

import numpy as np
from PIL import Image
import pytest

from configs import muhdi_synthetic
from dakd_jax import config as config_lib
from dakd_jax import errors
from dakd_jax.data import labels
from dakd_jax.data import pipeline
from dakd_jax.data import transforms

H, W = 12, 20
# The official `label2train` tables (MuHDi's `info7class.json`), ids not listed -> 255.
CITYSCAPES_7 = {7: 0, 8: 0, 11: 1, 12: 1, 13: 1, 17: 2, 19: 2, 20: 2, 21: 3, 22: 3, 23: 4, 24: 5,
                25: 5, 26: 6, 27: 6, 28: 6, 29: 6, 30: 6, 31: 6, 32: 6, 33: 6}
IDD_7 = {0: 0, 2: 0, 3: 0, 6: 5, 8: 5, 9: 6, 10: 6, 11: 6, 12: 6, 13: 6, 14: 6, 15: 6, 16: 6,
         17: 6, 18: 6, 19: 1, 20: 1, 21: 1, 23: 2, 24: 2, 25: 2, 26: 2, 29: 1, 32: 3, 33: 4}
# A sample of the official Mapillary name -> super-class mapping (MapillaryDataSet), by v1.2 id.
MAPILLARY_7 = {2: 1, 7: 0, 13: 0, 15: 0, 19: 5, 23: 0, 25: 255, 27: 4, 29: 0, 30: 3, 31: 255,
               43: 2, 45: 2, 48: 2, 51: 255, 52: 6, 53: 6, 55: 6, 62: 6, 63: 255, 65: 255}


def _table(pairs):
  return np.array([pairs.get(i, 255) for i in range(256)])


@pytest.mark.parametrize('space, table', [('label_id', CITYSCAPES_7), ('idd_id', IDD_7)])
def test_super_class_tables_equal_the_official_ones(space, table):
  ids = np.arange(256, dtype=np.uint8)
  np.testing.assert_array_equal(labels.to_train_ids(ids, space, 7), _table(table))


def test_mapillary_and_bdd_super_classes():
  ids = np.arange(256, dtype=np.uint8)
  got = labels.to_train_ids(ids, 'mapillary_id', 7)
  assert len(labels.MAPILLARY_SUPER) == 66 and np.all(got[66:] == 255)
  assert {i: int(got[i]) for i in MAPILLARY_7} == MAPILLARY_7
  # BDD100K train ids through their Cityscapes ids: terrain -> nature, car -> vehicle.
  train = labels.to_train_ids(ids, 'train_id', 7)
  assert (train[9], train[13], train[10], train[19]) == (3, 6, 4, 255)
  assert labels.class_names(7) == ('flat', 'construction', 'object', 'nature', 'sky', 'human',
                                   'vehicle')


def test_label_set_errors_name_the_key():
  with pytest.raises(errors.UserError, match='num_classes: expected one of'):
    labels.class_names(17)
  with pytest.raises(errors.UserError, match='idd_id labels have no mapping to 19'):
    labels.to_train_ids(np.zeros((2, 2), np.uint8), 'idd_id')
  config = muhdi_synthetic.get_config()
  config.num_classes = 17
  with pytest.raises(errors.UserError,
                     match=r'config.num_classes: expected one of \(19, 7, 16\)'):
    config_lib.validate(config)


def _write(image, label, rng, fmt):
  for path in (image, label):
    path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(image, fmt)
  Image.fromarray(rng.integers(0, 70, (H, W), dtype=np.uint8)).save(label)


def write_idd(root, counts=(('train', 3), ('val', 2))):
  rng = np.random.default_rng(0)
  for split, n in counts:
    for i in range(n):
      seq, frame = str(i % 2), f'{i:06d}'
      _write(root / 'leftImg8bit' / split / seq / f'{frame}_leftImg8bit.png',
             root / 'gtFine' / split / seq / f'{frame}_gtFine_labelids.png', rng, 'PNG')
  return root


def write_mapillary(root, counts=(('training', 3), ('validation', 2))):
  rng = np.random.default_rng(1)
  for folder, n in counts:
    for i in range(n):
      key = f'-{i}xKey{i}'
      _write(root / folder / 'images' / f'{key}.jpg', root / folder / 'labels' / f'{key}.png',
             rng, 'JPEG')
  return root


@pytest.mark.parametrize('dataset, write, table, label_of', [
    ('idd', write_idd, IDD_7,
     lambda root, split, name: root / 'gtFine' / split / str(int(name.split('_')[0]) % 2) /
     name.replace('_leftImg8bit', '_gtFine_labelids.png')),
    ('mapillary', write_mapillary, None,
     lambda root, split, name: root / {'train': 'training', 'val': 'validation'}[split] /
     'labels' / f'{name}.png'),
])
def test_builders_prepare_official_layouts_at_7_classes(dataset, write, table, label_of,
                                                        tmp_path):
  root = write(tmp_path / 'root')
  mapillary = dict(enumerate(labels._SUPER.get(n, 255) if n else 255  # pylint: disable=protected-access
                             for _, n in labels.MAPILLARY_SUPER))
  reference = _table(table if table is not None else mapillary)
  for split, n in (('train', 3), ('val', 2)):
    eval_set = pipeline.EvalSet(dataset=dataset, root=str(root), split=split,
                                input_size=(6, 10), num_classes=7)
    batches = list(pipeline.make_eval_dataset(eval_set, batch_size=2,
                                              data_dir=tmp_path / 'tfds'))
    names = [name for b in batches for name in b['name']]
    assert len(set(names)) == n
    for b in batches:
      assert b['image'].shape[1:] == (6, 10, 3)
      for name, label in zip(b['name'], b['label']):
        ids = np.asarray(Image.open(label_of(root, split, name)))
        np.testing.assert_array_equal(label, reference[ids])
  assert 'tensorflow' not in sys.modules


def _official_resize_with_pad(target_wh, image, resample, fill):
  """MuHDi's `resize_with_pad` (muhdi/dataset/mapillary.py), transcribed: fit at the image's
  aspect ratio (int-truncated side), then fill a (H, W) canvas from the top-left."""
  target_ratio, image_ratio = target_wh[0] / target_wh[1], image.size[0] / image.size[1]
  if image_ratio > target_ratio:
    shape = (target_wh[0], int(image.size[1] * (target_wh[0] / image.size[0])))
  else:
    shape = (int(image.size[0] * (target_wh[1] / image.size[1])), target_wh[1])
  resized = np.array(image.resize(shape, resample))
  result = np.full(tuple(target_wh[::-1]) + resized.shape[2:], fill, resized.dtype)
  result[:resized.shape[0], :resized.shape[1]] = resized
  return result


@pytest.mark.parametrize('input_size', [(8, 24), (16, 12)])
def test_mapillary_is_fitted_and_padded_as_muhdi_loads_it(input_size, tmp_path):
  """Wider and narrower than the 12x20 images: black image padding, labels padded with
  'Unlabeled' (65, ignored); at full label resolution the label is padded to the input's aspect
  ratio (MuHDi's `pad_with_fixed_AS`)."""
  root = write_mapillary(tmp_path / 'root', counts=(('validation', 2),))
  lut = labels.label_lut('mapillary_id', 7)
  read = lambda size: list(pipeline.make_eval_dataset(
      pipeline.EvalSet(dataset='mapillary', root=str(root), split='val', input_size=input_size,
                       label_size=size, normalization='caffe', num_classes=7),
      batch_size=2, data_dir=tmp_path / 'tfds'))[0]
  fitted, full = read(input_size), read(None)
  wh = [input_size[1], input_size[0]]
  for i, name in enumerate(fitted['name']):
    folder = root / 'validation'
    image = Image.open(folder / 'images' / f'{name}.jpg').convert('RGB')
    label = Image.open(folder / 'labels' / f'{name}.png')
    want = _official_resize_with_pad(wh, image, Image.BICUBIC, 0)
    np.testing.assert_allclose(fitted['image'][i],
                               transforms.normalize(want, 'caffe'), atol=1e-4)
    np.testing.assert_array_equal(fitted['label'][i],
                                  lut[_official_resize_with_pad(wh, label, Image.NEAREST, 65)])
    ratio = input_size[1] / input_size[0]
    width, height = (int(ratio * H), H) if ratio > W / H else (W, int(W / ratio))
    padded = np.full((height, width), 255, np.uint8)
    padded[:H, :W] = lut[np.asarray(label)]
    np.testing.assert_array_equal(full['label'][i], padded)
  assert (fitted['label'] == 255).any()
