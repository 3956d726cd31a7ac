"""The class table and label lookups, against cityscapesScripts and independent encoders."""

import numpy as np
import pytest

from dakd_jax.data import labels

cs_labels = pytest.importorskip('cityscapesscripts.helpers.labels')


def _official_train_id(train_id: int) -> int:
  return train_id if 0 <= train_id < 19 else 255


def test_table_matches_cityscapesscripts_on_every_id():
  ours = {l.id: l for l in labels.CITYSCAPES_LABELS}
  assert sorted(ours) == sorted(l.id for l in cs_labels.labels)
  for ref in cs_labels.labels:
    mine = ours[ref.id]
    assert (mine.name, mine.train_id, mine.color) == (ref.name, ref.trainId, ref.color), ref.name


def test_id_lut_matches_cityscapesscripts_and_ignores_unknown_ids():
  for ref in cs_labels.labels:
    if ref.id >= 0:
      assert labels.ID_TO_TRAIN_ID[ref.id] == _official_train_id(ref.trainId), ref.name
  known = {l.id for l in cs_labels.labels}
  assert all(labels.ID_TO_TRAIN_ID[i] == 255 for i in range(256) if i not in known)
  assert labels.ID_TO_TRAIN_ID.dtype == np.uint8 and labels.ID_TO_TRAIN_ID.shape == (256,)


def test_class_names_and_palette_follow_train_ids():
  by_train_id = {l.trainId: l for l in cs_labels.labels if 0 <= l.trainId < 19}
  assert labels.CLASS_NAMES == tuple(by_train_id[t].name for t in range(19))
  np.testing.assert_array_equal(labels.PALETTE, [by_train_id[t].color for t in range(19)])


def test_to_train_ids_for_both_label_spaces():
  ids = np.array([[7, 26, 0], [33, 34, 255]], dtype=np.uint8)
  np.testing.assert_array_equal(labels.to_train_ids(ids, 'label_id'), [[0, 13, 255], [18, 255, 255]])
  train = np.array([[0, 18, 19], [255, 5, 200]], dtype=np.uint8)
  out = labels.to_train_ids(train, 'train_id')
  assert out.dtype == np.int32
  np.testing.assert_array_equal(out, [[0, 18, 255], [255, 5, 255]])


def test_colorize():
  out = labels.colorize(np.array([[0, 13], [18, 255]]))
  assert out.shape == (2, 2, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, [[[128, 64, 128], [0, 0, 142]], [[119, 11, 32], [0, 0, 0]]])


def test_each_label_set_colours_its_own_classes():
  """SYNTHIA-16 keeps every class's Cityscapes colour (its sky is Cityscapes' sky, not fence's
  colour at the same index); MuHDi's 7 super-classes take the first 7 Cityscapes colours."""
  sixteen = labels.label_set(16)
  sky = sixteen.names.index('sky')
  np.testing.assert_array_equal(labels.colorize(np.array([sky, 255]), 16),
                                [labels.PALETTE[labels.CLASS_NAMES.index('sky')], [0, 0, 0]])
  for classes in (7, 16, 19):
    palette = labels.label_set(classes).palette
    assert palette.shape == (classes, 3) and len({tuple(c) for c in palette}) == classes
  np.testing.assert_array_equal(labels.colorize(np.arange(8), 7)[:7], labels.PALETTE[:7])
  assert labels.colorize(np.array([7]), 7).tolist() == [[0, 0, 0]]


def test_synthia_protocols():
  names = labels.CLASS_NAMES
  assert names[labels.SYNTHIA_ID_TO_TRAIN_ID[3]] == 'road'
  assert names[labels.SYNTHIA_ID_TO_TRAIN_ID[21]] == 'wall'
  assert names[labels.SYNTHIA_ID_TO_TRAIN_ID[11]] == 'bicycle'
  assert sorted(int(v) for v in labels.SYNTHIA_ID_TO_TRAIN_ID if v != 255) == list(range(19))
  assert len(labels.SYNTHIA_16_CLASS_NAMES) == 16 and len(labels.SYNTHIA_13_CLASS_NAMES) == 13
  assert not {'terrain', 'truck', 'train'} & set(labels.SYNTHIA_16_CLASS_NAMES)
  assert not {'wall', 'fence', 'pole'} & set(labels.SYNTHIA_13_CLASS_NAMES)
  # DiGA's 16-way order: SYNTHIA ids 3,4,2,21,5,7,15,9,6,1,10,17,8,19,12,11 -> 0..15.
  order = [3, 4, 2, 21, 5, 7, 15, 9, 6, 1, 10, 17, 8, 19, 12, 11]
  np.testing.assert_array_equal(
      labels.to_train_ids(np.array(order, np.uint8), 'synthia_id', 16), range(16))
  np.testing.assert_array_equal(
      labels.to_train_ids(np.array([16, 18, 20, 0, 255], np.uint8), 'synthia_id'),
      [9, 14, 16, 255, 255])


def test_label_ids_of_train_ids_follow_cityscapesscripts():
  train_ids = np.array([[0, 10, 18], [255, 19, 13]], np.uint8)
  assert labels.to_label_ids(train_ids).tolist() == [
      [cs_labels.trainId2label[0].id, cs_labels.trainId2label[10].id,
       cs_labels.trainId2label[18].id],
      [0, 0, cs_labels.trainId2label[13].id]]  # Ignore and unknown: 'unlabeled', never scored.
  every = np.arange(19, dtype=np.uint8)
  np.testing.assert_array_equal(labels.ID_TO_TRAIN_ID[labels.to_label_ids(every)], every)


def test_overlay_blends_the_palette_and_leaves_ignored_pixels_alone():
  image = np.full((1, 3, 3), 100, np.uint8)
  blended = labels.overlay(image, np.array([[0, 255, 13]], np.uint8), alpha=0.25)
  expected_road = np.rint(0.75 * 100 + 0.25 * labels.PALETTE[0].astype(np.float64))
  np.testing.assert_array_equal(blended[0, 0], expected_road)
  np.testing.assert_array_equal(blended[0, 1], image[0, 1])
  assert blended.dtype == np.uint8 and blended.shape == image.shape
