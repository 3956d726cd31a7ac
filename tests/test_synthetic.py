"""Tests of the synthetic domain pair: layouts, label ids, determinism, scene content, domain gap."""

import filecmp
import os
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from dakd_jax.data import labels
from dakd_jax.data import synthetic

SMALL = dict(size=(64, 128), num_source=4, num_target_train=5, num_target_val=3, bdd=True,
             num_bdd_train=2, num_bdd_val=2)
TRAIN_IDS = {l.id for l in labels.TRAIN_LABELS}
VALID_IDS = {l.id for l in labels.CITYSCAPES_LABELS if l.id >= 0}


def _files(root: str) -> dict[str, str]:
  return {str(p.relative_to(root)): str(p) for p in sorted(pathlib.Path(root).rglob('*'))
          if p.is_file() and p.name != synthetic.MANIFEST_NAME}


@pytest.fixture(scope='module')
def trees(tmp_path_factory):
  """Three small trees: seed 0 serially, seed 0 with two workers, seed 1."""
  out = {}
  for key, seed, workers in (('a', 0, 1), ('b', 0, 2), ('c', 1, 1)):
    path = tmp_path_factory.mktemp(key)
    out[key] = (str(path), synthetic.generate(str(path), seed=seed, num_workers=workers, **SMALL))
  return out


def _render(domain, n, split='train', seed=0, size=(128, 256)):
  return [synthetic.render_scene(domain, synthetic.scene_rng(seed, domain, split, i), size)
          for i in range(n)]


def test_official_layouts(trees):
  out, roots = trees['a']
  assert roots == {name: os.path.join(out, name) for name in ('gta5', 'cityscapes', 'bdd100k')}
  gta = _files(roots['gta5'])
  images = sorted(k for k in gta if k.startswith('images/'))
  assert len(gta) == 2 * SMALL['num_source']
  assert all(re.fullmatch(r'images/\d{5}\.png', k) for k in images)
  assert images[0] == 'images/00001.png'
  assert sorted(k for k in gta if k.startswith('labels/')) == [
      k.replace('images/', 'labels/') for k in images]

  cs = _files(roots['cityscapes'])
  pattern = re.compile(r'leftImg8bit/(train|val)/([a-z]+)/\2_(\d{6})_(\d{6})_leftImg8bit\.png')
  images = [k for k in cs if k.startswith('leftImg8bit/')]
  assert len(images) == SMALL['num_target_train'] + SMALL['num_target_val']
  assert len(cs) == 2 * len(images)
  for k in images:
    match = pattern.fullmatch(k)
    assert match, k
    assert match.group(2) in synthetic.CITYSCAPES_CITIES[match.group(1)]
    assert k.replace('leftImg8bit/', 'gtFine/', 1).replace(
        '_leftImg8bit.png', '_gtFine_labelIds.png') in cs
  assert {k.split('/')[1] for k in images} == {'train', 'val'}

  bdd = _files(roots['bdd100k'])
  jpgs = [k for k in bdd if k.startswith('images/10k/')]
  assert len(jpgs) == SMALL['num_bdd_train'] + SMALL['num_bdd_val']
  for k in jpgs:
    match = re.fullmatch(r'images/10k/(train|val)/([0-9a-f]{8}-[0-9a-f]{8})\.jpg', k)
    assert match, k
    assert f'labels/sem_seg/masks/{match.group(1)}/{match.group(2)}.png' in bdd
  with Image.open(os.path.join(roots['bdd100k'], jpgs[0])) as im:
    assert im.format == 'JPEG' and im.size == (128, 64)


def test_same_seed_same_bytes_whatever_the_workers(trees):
  (_, a), (_, b), (_, c) = trees['a'], trees['b'], trees['c']
  for name in a:
    fa, fb = _files(a[name]), _files(b[name])
    assert fa.keys() == fb.keys()
    for key in fa:
      assert filecmp.cmp(fa[key], fb[key], shallow=False), key
  # Another seed: other pictures (and other BDD names).
  fa, fc = _files(a['gta5']), _files(c['gta5'])
  assert not any(filecmp.cmp(fa[k], fc[k], shallow=False) for k in fa)
  assert _files(a['bdd100k']).keys().isdisjoint(_files(c['bdd100k']).keys())


def test_labels_are_cityscapes_label_ids(trees):
  _, roots = trees['a']
  for root, mode in ((roots['gta5'], 'P'), (roots['cityscapes'], 'L')):
    seen = set()
    for path in _files(root).values():
      if 'labels' in path or 'gtFine' in path:
        with Image.open(path) as im:
          assert im.mode == mode, path  # GTA5 ships palette PNGs, Cityscapes grey ones
          seen |= set(np.unique(np.asarray(im)).tolist())
    assert seen <= VALID_IDS
    assert len(seen & TRAIN_IDS) >= 10
    assert seen - TRAIN_IDS, 'no void ids: the id -> train id map would not be exercised'
    # Road (7) and building (11) as label ids; 2, 3, 5, 6 would be train ids of common classes.
    assert {7, 11} <= seen and not seen & {2, 3, 5, 6}
  # BDD100K masks are the train ids of the same drawing.
  masks = [k for k in _files(roots['bdd100k']) if k.startswith('labels/')]
  assert len(masks) == SMALL['num_bdd_train'] + SMALL['num_bdd_val']
  for split in ('train', 'val'):
    for index in range(2):
      name = synthetic.layouts._bdd_name(0, split, index)  # pylint: disable=protected-access
      _, label = synthetic.render_scene('bdd100k', synthetic.scene_rng(0, 'bdd100k', split, index),
                                        SMALL['size'])
      with Image.open(os.path.join(roots['bdd100k'], 'labels', 'sem_seg', 'masks', split,
                                   f'{name}.png')) as im:
        mask = np.asarray(im)
      np.testing.assert_array_equal(mask, labels.ID_TO_TRAIN_ID[label])
      assert 255 in mask and mask[mask != 255].max() < 19  # the bonnet is ignored


def test_labels_are_the_geometry_of_the_image():
  # The source render is flat shaded: inside one label region colours change only at the edges of
  # sub-primitives (windows, markings), and every label edge is also a colour edge.
  image, label = _render('gta5', 1)[0]
  label_edge = label[:, 1:] != label[:, :-1]
  colour_edge = np.any(image[:, 1:] != image[:, :-1], axis=-1)
  assert label_edge.sum() > 500
  assert (label_edge & colour_edge).sum() >= 0.97 * label_edge.sum()


def test_scenes_have_many_classes_and_rare_classes_stay_rare():
  for domain in ('gta5', 'cityscapes'):
    present = np.array([np.bincount(labels.ID_TO_TRAIN_ID[lab].ravel(), minlength=256)[:19] > 0
                        for _, lab in _render(domain, 20)])
    per_image = present.sum(1)
    assert (per_image >= 12).mean() >= 0.8, (domain, per_image)
    frequency = present.mean(0)
    common = [labels.CLASS_NAMES.index(n) for n in ('road', 'sidewalk', 'building', 'sky', 'car')]
    assert (frequency[common] >= 0.9).all(), (domain, frequency)
    assert frequency[labels.CLASS_NAMES.index('train')] <= 0.2, (domain, frequency)


def test_domains_differ_in_look_but_not_in_layout():
  stats = {}
  for domain in ('gta5', 'cityscapes'):
    images = np.stack([im for im, _ in _render(domain, 12)]).astype(np.float32)
    train_ids = np.stack([labels.ID_TO_TRAIN_ID[lab] for _, lab in _render(domain, 12)])
    means = np.stack([images[train_ids == c].mean(0) for c in (1, 2, 8, 10)])
    freq = np.bincount(train_ids.ravel(), minlength=256)[:19]
    stats[domain] = dict(means=means, freq=freq / freq.sum(),
                         saturation=(images.max(-1) - images.min(-1)).mean(), std=images.std())
  src, tgt = stats['gta5'], stats['cityscapes']
  # Sidewalk, building, vegetation and sky change colour by far more than noise.
  assert (np.linalg.norm(src['means'] - tgt['means'], axis=1) > 25).all()
  assert tgt['saturation'] < 0.6 * src['saturation']
  assert tgt['std'] < 0.8 * src['std']
  # ...while the class layout statistics stay comparable.
  assert 0.5 * np.abs(src['freq'] - tgt['freq']).sum() < 0.2


def test_colour_classifier_fitted_on_source_transfers_badly():
  """A per-pixel nearest-class-mean colour classifier: the gap shows as a clear accuracy drop."""
  def data(domain):
    pairs = _render(domain, 10)
    x = np.concatenate([im.reshape(-1, 3) for im, _ in pairs]).astype(np.float32)
    y = np.concatenate([labels.ID_TO_TRAIN_ID[lab].ravel() for _, lab in pairs])
    return x[y < 19], y[y < 19]

  def accuracy(means, x, y):
    return (((x[:, None] - means[None]) ** 2).sum(-1).argmin(1) == y).mean()

  (xs, ys), (xt, yt) = data('gta5'), data('cityscapes')
  means = np.stack([xs[ys == c].mean(0) if (ys == c).any() else np.full(3, 1e6)
                    for c in range(19)])
  on_source, on_target = accuracy(means, xs, ys), accuracy(means, xt, yt)
  assert on_target < 0.75 * on_source, (on_source, on_target)


def test_manifest_reuses_and_regenerates(tmp_path):
  kwargs = dict(size=(64, 128), num_source=2, num_target_train=2, num_target_val=1)
  roots = synthetic.generate(str(tmp_path), **kwargs)
  first = os.path.join(roots['gta5'], 'images', '00001.png')
  stamp = os.stat(first).st_mtime_ns
  synthetic.generate(str(tmp_path), **kwargs)
  assert os.stat(first).st_mtime_ns == stamp  # complete and matching: nothing redrawn
  old = open(first, 'rb').read()
  synthetic.generate(str(tmp_path), seed=3, **kwargs)
  assert open(first, 'rb').read() != old
  assert not os.path.exists(os.path.join(roots['gta5'], 'images', '00003.png'))
  os.remove(first)  # incomplete tree: redrawn
  synthetic.generate(str(tmp_path), seed=3, **kwargs)
  assert os.path.exists(first)
  foreign = tmp_path / 'foreign'
  (foreign / 'cityscapes').mkdir(parents=True)
  with pytest.raises(FileExistsError, match='overwrite'):
    synthetic.generate(str(foreign), **kwargs)
  with pytest.raises(ValueError, match='size'):
    synthetic.generate(str(tmp_path / 'bad'), size=(8, 8))
  with pytest.raises(ValueError, match='unknown synthetic domain'):
    synthetic.render_scene('synthia', np.random.default_rng(0))


def test_cli(tmp_path, capsys):
  synthetic.main(['--out', str(tmp_path), '--height', '64', '--width', '128', '--num-source', '1',
                  '--num-target-train', '1', '--num-target-val', '1', '--workers', '1'])
  assert f'gta5: {tmp_path / "gta5"}' in capsys.readouterr().out
  assert (tmp_path / 'gta5' / 'labels' / '00001.png').is_file()


def test_default_size_generation(tmp_path):
  synthetic.generate(str(tmp_path), num_source=20, num_target_train=15, num_target_val=5)
  with Image.open(tmp_path / 'gta5' / 'images' / '00020.png') as im:
    assert im.size == (256, 128)
