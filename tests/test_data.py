"""Builders and grain pipelines on tiny trees written here in each official layout, with no TF."""

import dataclasses
import logging
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from dakd_jax.data import pipeline
from dakd_jax.data import transforms

cs_labels = pytest.importorskip('cityscapesscripts.helpers.labels')

H, W = 12, 20  # fixture image size (height, width)
CAFFE_MEAN_BGR = np.array([104.00698793, 116.66876762, 122.67891434], dtype=np.float32)


def _write_pair(image_path, label_path, rng, label_high=40, label_hw=(H, W), fmt='PNG'):
  """A random RGB image and a random id map (values above 33 exercise unknown ids)."""
  image_path.parent.mkdir(parents=True, exist_ok=True)
  label_path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(image_path, fmt)
  Image.fromarray(rng.integers(0, label_high, label_hw, dtype=np.uint8)).save(label_path)


def write_gta5(root, n=6, mismatch=()):
  rng = np.random.default_rng(1)
  for i in range(1, n + 1):
    name = f'{i:05d}.png'
    hw = (H - 2, W) if i in mismatch else (H, W)
    _write_pair(root / 'images' / name, root / 'labels' / name, rng, label_hw=hw)
  return root


def write_cityscapes(root, counts=(('train', 4), ('val', 3)), label_hw=(H, W)):
  rng = np.random.default_rng(2)
  for split, n in counts:
    for i in range(n):
      city = ('aachen', 'bonn')[i % 2]
      stem = f'{city}_{i:06d}_000019'
      _write_pair(root / 'leftImg8bit' / split / city / f'{stem}_leftImg8bit.png',
                  root / 'gtFine' / split / city / f'{stem}_gtFine_labelIds.png', rng,
                  label_hw=label_hw)
  return root


def write_bdd100k(root, layout, counts=(('train', 3), ('val', 2))):
  rng = np.random.default_rng(3)
  for split, n in counts:
    for i in range(n):
      stem = f'{i:07x}-bdd'
      if layout == 'new':
        image = root / 'images' / '10k' / split / f'{stem}.jpg'
        label = root / 'labels' / 'sem_seg' / 'masks' / split / f'{stem}.png'
      else:
        image = root / 'seg' / 'images' / split / f'{stem}.jpg'
        label = root / 'seg' / 'labels' / split / f'{stem}_train_id.png'
      _write_pair(image, label, rng, label_high=25, fmt='JPEG')  # train ids; 19..24 unknown
  return root


def cfg(dataset, root, split='train', size=None, augment=None, normalization='caffe'):
  """A training stream of `dataset` at `root`."""
  return pipeline.Stream(dataset=dataset, root=str(root), split=split, size=size,
                         normalization=normalization,
                         augment=pipeline.Augment(**augment) if augment else pipeline.Augment())


def eval_set(dataset, root, split='train', input_size=None, **kwargs):
  """An evaluation split of `dataset` at `root`."""
  return pipeline.EvalSet(dataset=dataset, root=str(root), split=split, input_size=input_size,
                          **kwargs)


def reference_label(path, space, size=None):
  """Independent reference: Pillow NEAREST, then cityscapesScripts' id -> trainId."""
  label = Image.open(path)
  if size is not None:
    label = label.resize((size[1], size[0]), Image.NEAREST)
  ids = np.asarray(label).astype(np.int64)
  if space == 'train_id':
    return np.where(ids < 19, ids, 255)
  return reference_label_ids(ids)


def reference_label_ids(ids):
  """cityscapesScripts' id -> trainId on every pixel (ignored and unknown ids -> 255)."""
  by_id = {l.id: l.trainId for l in cs_labels.labels}
  return np.vectorize(lambda i: by_id[i] if 0 <= by_id.get(i, 255) < 19 else 255)(ids)


def reference_image(path, size):
  image = Image.open(path).convert('RGB').resize((size[1], size[0]), Image.BICUBIC)
  return np.asarray(image, dtype=np.float32)[:, :, ::-1] - CAFFE_MEAN_BGR


def take(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)]


@pytest.fixture(scope='module')
def gta5(tmp_path_factory):
  return write_gta5(tmp_path_factory.mktemp('gta5'), mismatch=(3,))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


LAYOUTS = {
    'gta5': (lambda r: write_gta5(r), {'train': 6}, 'label_id', 'labels/{}.png'),
    'cityscapes': (lambda r: write_cityscapes(r), {'train': 4, 'val': 3}, 'label_id', None),
    'bdd100k_new': (lambda r: write_bdd100k(r, 'new'), {'train': 3, 'val': 2}, 'train_id',
                    'labels/sem_seg/masks/{split}/{}.png'),
    'bdd100k_old': (lambda r: write_bdd100k(r, 'old'), {'train': 3, 'val': 2}, 'train_id',
                    'seg/labels/{split}/{}_train_id.png'),
}


def _label_file(layout, root, split, name):
  if layout == 'cityscapes':
    stem = name.replace('_leftImg8bit', '_gtFine_labelIds')
    return root / 'gtFine' / split / name.split('_')[0] / f'{stem}.png'
  return root / LAYOUTS[layout][3].format(name, split=split)


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_official_layout_prepares_and_reads_without_tensorflow(layout, tmp_path):
  write, counts, space, _ = LAYOUTS[layout]
  root = write(tmp_path / 'root')
  dataset = layout.split('_')[0]
  for split, n in counts.items():
    c = eval_set(dataset, root, split, input_size=(6, 10))
    assert pipeline.num_examples(c, data_dir=tmp_path / 'tfds') == n
    batches = list(pipeline.make_eval_dataset(c, batch_size=2, data_dir=tmp_path / 'tfds'))
    names = [name for b in batches for name in b['name']]
    assert len(names) == n and names == sorted(names)
    for b in batches:
      assert b['image'].shape[1:] == (6, 10, 3) and b['image'].dtype == np.float32
      assert b['label'].shape[1:] == (H, W) and b['label'].dtype == np.int32  # full resolution
      for name, label in zip(b['name'], b['label']):
        np.testing.assert_array_equal(label, reference_label(
            _label_file(layout, root, split, name), space))
  assert 'tensorflow' not in sys.modules


def test_prepare_is_idempotent_and_tied_to_its_root(gta5, data_dir, tmp_path, monkeypatch):
  c = cfg('gta5', gta5)
  pipeline.prepare(c, data_dir)

  def prepare_again(*args, **kwargs):
    raise AssertionError('prepared data must be reused, not prepared again')

  monkeypatch.setattr(pipeline.BUILDERS['gta5'], 'download_and_prepare', prepare_again)
  builder = pipeline.prepare(c, data_dir)
  assert builder.info.splits['train'].num_examples == 6
  other = write_gta5(tmp_path / 'other', n=2)
  with pytest.raises(ValueError, match='was prepared from .*delete it or use another data_dir'):
    pipeline.prepare(cfg('gta5', other), data_dir)


def test_train_preprocessing_is_pixel_exact(gta5, data_dir):
  size = (7, 9)
  refs = {i: (reference_image(gta5 / 'images' / f'{i:05d}.png', size),
              reference_label(gta5 / 'labels' / f'{i:05d}.png', 'label_id', size))
          for i in range(1, 7)}
  ds = pipeline.make_train_dataset(cfg('gta5', gta5, size=size), global_batch_size=3, seed=0,
                                   data_dir=data_dir, shard_index=0, shard_count=1)
  seen = set()
  for batch in take(ds, 2):
    for image, label in zip(batch['image'], batch['label']):
      match = [i for i, (ri, rl) in refs.items()
               if np.array_equal(image, ri) and np.array_equal(label, rl)]
      assert len(match) == 1
      seen.add(match[0])
  assert seen == set(refs)  # one epoch of 6 covers every image once


def test_cycled_sizes_resize_each_batch_position_to_its_size(gta5, data_dir):
  """sizes ((7, 9), (9, 12)), crop 7x9: every batch's first image is the whole 7x9 resize of
  some image, its second a 7x9 window of some image's 9x12 resize (DiGA's two sizes)."""
  sizes = ((7, 9), (9, 12))
  refs = {size: [reference_image(gta5 / 'images' / f'{i:05d}.png', size) for i in range(1, 7)]
          for size in sizes}
  stream = pipeline.Stream(dataset='gta5', root=str(gta5), size=(7, 9), sizes=sizes,
                           augment=pipeline.Augment(crop=(7, 9)))
  windows = lambda ref: [ref[r:r + 7, c:c + 9] for r in range(3) for c in range(4)]
  for batch in take(pipeline.make_train_dataset(stream, global_batch_size=2, seed=0,
                                                data_dir=data_dir, shard_index=0,
                                                shard_count=1), 3):
    assert any(np.array_equal(batch['image'][0], ref) for ref in refs[sizes[0]])
    assert any(np.array_equal(batch['image'][1], w)
               for ref in refs[sizes[1]] for w in windows(ref))
    assert not any(np.array_equal(batch['image'][1], ref) for ref in refs[sizes[0]])


AUGMENT = dict(random_scale=(0.5, 1.5), crop=(5, 8), flip=True)


def test_augmented_batches_shapes_dtypes_and_values(gta5, data_dir):
  ds = pipeline.make_train_dataset(cfg('gta5', gta5, size=(8, 14), augment=AUGMENT),
                                   global_batch_size=4, seed=1, data_dir=data_dir,
                                   shard_index=0, shard_count=2)
  for batch in take(ds, 4):
    assert set(batch) == {'image', 'label'}
    assert batch['image'].shape == (2, 5, 8, 3) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (2, 5, 8) and batch['label'].dtype == np.int32
    assert set(np.unique(batch['label'])) <= set(range(19)) | {255}


def test_same_seed_same_batches_other_seed_other_batches(gta5, data_dir):
  def batches(seed):
    c = cfg('gta5', gta5, size=(8, 14), augment=AUGMENT)
    ds = pipeline.make_train_dataset(c, global_batch_size=2, seed=seed, data_dir=data_dir,
                                     shard_index=0, shard_count=1)
    return np.stack([b['image'] for b in take(ds, 5)])

  np.testing.assert_array_equal(batches(3), batches(3))
  assert not np.array_equal(batches(3), batches(4))


@pytest.mark.parametrize('device_buffer', [None, 0, 3])
def test_restored_iterator_continues_with_the_next_batch(gta5, data_dir, device_buffer):
  def make():
    ds = pipeline.make_train_dataset(cfg('gta5', gta5, size=(8, 14), augment=AUGMENT),
                                     global_batch_size=2, seed=5, data_dir=data_dir,
                                     shard_index=0, shard_count=1)
    if device_buffer is None:
      return ds
    # The prefetch thread runs ahead of the consumer; the state must not.
    return pipeline.prefetch_to_device(ds, lambda b: jax.tree.map(jnp.asarray, b), device_buffer)

  it = iter(make())
  for _ in range(4):  # crosses an epoch boundary (6 images, batches of 2)
    next(it)
  time.sleep(0.2)  # Let a prefetch thread fill its buffer.
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  resumed = iter(make())
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    np.testing.assert_array_equal(got['image'], want['image'])
    np.testing.assert_array_equal(got['label'], want['label'])
  it.close()
  resumed.close()


def test_two_hosts_see_disjoint_shards_covering_the_dataset(gta5, data_dir):
  def labels_of(shard_index):
    ds = pipeline.make_train_dataset(cfg('gta5', gta5), global_batch_size=2, seed=7,
                                     data_dir=data_dir, shard_index=shard_index, shard_count=2)
    return [b['label'][0].tobytes() for b in take(ds, 3)]  # 3 steps x 2 hosts = one epoch

  host0, host1 = labels_of(0), labels_of(1)
  everything = {gta5_label(gta5, i).astype(np.int32).tobytes() for i in range(1, 7)}
  assert len(everything) == 6
  assert not set(host0) & set(host1)
  assert set(host0) | set(host1) == everything


def gta5_label(root, i):
  """Reference train-id label of GTA5 image i at image size (mismatched labels: NEAREST)."""
  label = Image.open(root / 'labels' / f'{i:05d}.png')
  if label.size != (W, H):
    label = label.resize((W, H), Image.NEAREST)
  return reference_label_ids(np.asarray(label))


def test_gta5_size_mismatch_is_resized_and_counted(gta5, tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    ds = pipeline.make_eval_dataset(eval_set('gta5', gta5), batch_size=1, data_dir=tmp_path)
  assert '1 image/label pairs differ in size' in caplog.text
  batches = {b['name'][0]: b for b in ds}
  assert Image.open(gta5 / 'labels' / '00003.png').size == (W, H - 2)
  np.testing.assert_array_equal(batches['00003']['label'][0], gta5_label(gta5, 3))


def test_eval_num_images_and_batch_size(tmp_path):
  root = write_cityscapes(tmp_path / 'cs')
  c = eval_set('cityscapes', root, 'val', input_size=(6, 10), num_images=2)
  batches = list(pipeline.make_eval_dataset(c, batch_size=2, data_dir=tmp_path / 'tfds'))
  assert len(batches) == 1 and list(batches[0]['name']) == sorted(batches[0]['name'])
  assert batches[0]['image'].shape == (2, 6, 10, 3)


def test_eval_label_size_resizes_labels_nearest(tmp_path):
  """DAKD's eval_cs.py protocol: labels scored at a given size, nearest-resized."""
  root = write_cityscapes(tmp_path / 'cs')
  c = eval_set('cityscapes', root, 'val', input_size=(6, 10), label_size=(5, 7))
  batch = next(iter(pipeline.make_eval_dataset(c, batch_size=1, data_dir=tmp_path / 'tfds')))
  name = batch['name'][0]
  path = _label_file('cityscapes', root, 'val', name)
  np.testing.assert_array_equal(batch['label'][0], reference_label(path, 'label_id', (5, 7)))


# --- bad input ---------------------------------------------------------------------------------

def test_missing_root_names_the_expected_tree(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'does not exist; expected <root>/images/NNNNN.png'):
    pipeline.prepare(cfg('gta5', tmp_path / 'nowhere'), tmp_path / 'tfds')


def test_empty_root_names_the_expected_tree(tmp_path):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match=r'no images found .*<root>/leftImg8bit/\{train,val\}'):
    pipeline.prepare(cfg('cityscapes', tmp_path / 'empty'), tmp_path / 'tfds')


def test_missing_split_names_the_expected_tree(tmp_path):
  root = write_cityscapes(tmp_path / 'cs', counts=(('train', 2),))
  with pytest.raises(ValueError, match=r"split 'val' not found .*\['train'\].*expected <root>/"):
    pipeline.num_examples(cfg('cityscapes', root, 'val'), data_dir=tmp_path / 'tfds')


def test_missing_label_names_the_file(tmp_path):
  root = write_gta5(tmp_path / 'g', n=2)
  (root / 'labels' / '00002.png').unlink()
  with pytest.raises(FileNotFoundError, match=r'label .*labels/00002.png for image .*00002.png'):
    pipeline.prepare(cfg('gta5', root), tmp_path / 'tfds')


def test_size_mismatch_outside_gta5_names_both_files(tmp_path):
  root = write_cityscapes(tmp_path / 'cs', counts=(('train', 1),), label_hw=(H, W - 1))
  with pytest.raises(ValueError, match=r'image .*_leftImg8bit.png is 20x12 but label '
                                       r'.*_gtFine_labelIds.png is 19x12'):
    pipeline.prepare(cfg('cityscapes', root), tmp_path / 'tfds')


def test_truncated_image_names_the_file(tmp_path):
  root = write_gta5(tmp_path / 'g', n=3)
  path = root / 'images' / '00002.png'
  path.write_bytes(path.read_bytes()[:-60])  # header intact, pixel data cut short
  ds = pipeline.make_eval_dataset(eval_set('gta5', root), batch_size=1,
                                  data_dir=tmp_path / 'tfds')
  with pytest.raises(ValueError, match=r'cannot decode image images/00002.png'):
    list(ds)


def test_skip_unreadable_leaves_the_example_out_and_lists_it(tmp_path, caplog):
  root = write_gta5(tmp_path / 'g', n=3)
  path = root / 'images' / '00002.png'
  path.write_bytes(path.read_bytes()[:-60])
  stream = dataclasses.replace(cfg('gta5', root), skip_unreadable=True)
  pipeline.check(stream, tmp_path / 'tfds')  # Start-up checks let the run begin.
  skipped = transforms.SkippedFiles()
  with caplog.at_level(logging.WARNING):
    batches = take(pipeline.make_train_dataset(stream, global_batch_size=2, seed=0,
                                               data_dir=tmp_path / 'tfds', shard_index=0,
                                               shard_count=1, skipped=skipped), 6)
  readable = [np.asarray(Image.open(root / 'images' / f'0000{i}.png').convert('RGB'))
              for i in (1, 3)]
  for image in (x for b in batches for x in b['image']):  # Full batches of readable examples.
    bgr = (image + transforms.CAFFE_MEAN_BGR)[..., ::-1]
    assert sum(np.allclose(bgr, r, atol=1e-3) for r in readable) == 1
  (name, reason), = skipped.listing().items()  # Met every epoch, named once.
  assert reason.startswith('cannot decode image images/00002.png') and '00002' in name
  assert sum('images/00002.png' in r.getMessage() for r in caplog.records) == 1


def test_unknown_dataset_and_normalization(tmp_path, gta5, data_dir):
  with pytest.raises(ValueError, match="dataset: expected one of .*got 'kitti'"):
    pipeline.prepare(cfg('kitti', tmp_path), tmp_path / 'tfds')
  c = cfg('gta5', gta5, normalization='bgr')
  with pytest.raises(ValueError, match="normalization: expected 'caffe', 'diga' or 'imagenet'"):
    take(pipeline.make_train_dataset(c, global_batch_size=1, seed=0, data_dir=data_dir,
                                     shard_index=0, shard_count=1), 1)


def test_imagenet_normalization(gta5, data_dir):
  c = cfg('gta5', gta5, size=(7, 9), normalization='imagenet')
  ds = pipeline.make_train_dataset(c, global_batch_size=1, seed=0, data_dir=data_dir,
                                   shard_index=0, shard_count=1)
  image = take(ds, 1)[0]['image'][0]
  rgb = [np.asarray(Image.open(gta5 / 'images' / f'{i:05d}.png').convert('RGB').resize(
      (9, 7), Image.BICUBIC), dtype=np.float32) / 255 for i in range(1, 7)]
  refs = [(x - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225]) for x in rgb]
  assert any(np.allclose(image, r, atol=1e-6) for r in refs)


@pytest.mark.parametrize('mode', ['caffe', 'imagenet'])
def test_denormalize_inverts_normalize(mode):
  rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
  np.testing.assert_array_equal(transforms.denormalize(transforms.normalize(rgb, mode), mode), rgb)


def test_changed_source_files_are_prepared_again(gta5, data_dir, caplog):
  c = cfg('gta5', gta5)
  pipeline.prepare(c, data_dir)
  pipeline._VERIFIED.clear()  # A new process.
  label = gta5 / 'labels' / '00001.png'
  corrected = np.zeros_like(np.asarray(Image.open(label)))
  Image.fromarray(corrected).save(label)  # A label corrected on disk.
  with caplog.at_level('WARNING'):
    builder = pipeline.prepare(c, data_dir)
  assert 'changed since they were prepared' in caplog.text
  assert builder.info.splits['train'].num_examples == 6
  records = builder.as_data_source('train')
  stored = next(r['label'] for r in records if r['name'] in ('00001', b'00001'))
  np.testing.assert_array_equal(np.squeeze(stored), corrected)
