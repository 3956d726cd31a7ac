"""Confusion matrix, IoU / mIoU / accuracies and the results table."""

import json
import math

import jax
import numpy as np
import pytest

from dakd_jax import metrics

NAMES3 = ("road", "sidewalk", "building")


def _numpy_confusion(pred, label, c):
  keep = (label >= 0) & (label < c)
  return np.bincount(label[keep] * c + pred[keep], minlength=c * c).reshape(c, c)


def test_perfect_prediction():
  label = np.array([[[0, 1], [2, 2]]])
  conf = metrics.confusion_matrix(label, label, 3)
  np.testing.assert_array_equal(conf, np.diag([1, 1, 2]))
  m = metrics.segmentation_metrics(conf, NAMES3)
  assert m["miou"] == pytest.approx(100.0)
  assert m["pixel_acc"] == pytest.approx(100.0)
  assert m["mean_class_acc"] == pytest.approx(100.0)
  assert m["num_pixels"] == 4


def test_all_wrong():
  label = np.array([[[0, 1], [2, 0]]])
  pred = (label + 1) % 3
  m = metrics.segmentation_metrics(metrics.confusion_matrix(pred, label, 3), NAMES3)
  assert m["miou"] == 0.0 and m["pixel_acc"] == 0.0 and m["mean_class_acc"] == 0.0
  assert m["per_class_iou"] == {"road": 0.0, "sidewalk": 0.0, "building": 0.0}


def test_absent_class_is_nan_and_left_out_of_the_mean():
  label = np.array([[0, 0, 1, 1]])
  pred = np.array([[0, 1, 1, 1]])
  m = metrics.segmentation_metrics(metrics.confusion_matrix(pred, label, 3), NAMES3)
  # road: 1 / (2 + 1 - 1) = 50%; sidewalk: 2 / (2 + 3 - 2) = 66.67%; building absent.
  assert m["per_class_iou"]["building"] is None
  assert m["per_class_iou"]["road"] == pytest.approx(50.0)
  assert m["per_class_iou"]["sidewalk"] == pytest.approx(200.0 / 3)
  assert m["miou"] == pytest.approx((50.0 + 200.0 / 3) / 2)
  json.dumps(m, allow_nan=False)  # NaNs became None, so the dict is strict JSON.


def test_predicted_but_absent_from_ground_truth_counts_as_zero():
  label = np.array([[0, 0]])
  pred = np.array([[0, 2]])
  m = metrics.segmentation_metrics(metrics.confusion_matrix(pred, label, 3), NAMES3)
  assert m["per_class_iou"]["building"] == 0.0
  assert m["miou"] == pytest.approx((50.0 + 0.0) / 2)
  assert m["mean_class_acc"] == pytest.approx(50.0)  # only road is in the ground truth


def test_ignore_pixels_dropped():
  label = np.array([[0, 255, 1, 255, -1, 7]])
  pred = np.array([[0, 2, 1, 1, 2, 0]])
  conf = metrics.confusion_matrix(pred, label, 3)
  np.testing.assert_array_equal(conf, [[1, 0, 0], [0, 1, 0], [0, 0, 0]])


def test_hand_computed_example():
  #        gt\pred  0  1  2
  # rows:       0 [ 3, 1, 0 ]
  #             1 [ 0, 2, 2 ]
  #             2 [ 1, 0, 1 ]
  label = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
  pred = np.array([0, 0, 0, 1, 1, 1, 2, 2, 0, 2])
  conf = metrics.confusion_matrix(pred.reshape(1, 2, 5), label.reshape(1, 2, 5), 3)
  np.testing.assert_array_equal(conf, [[3, 1, 0], [0, 2, 2], [1, 0, 1]])
  m = metrics.segmentation_metrics(conf, NAMES3)
  ious = [3 / (4 + 4 - 3), 2 / (4 + 3 - 2), 1 / (2 + 3 - 1)]
  assert [m["per_class_iou"][n] for n in NAMES3] == pytest.approx([100 * v for v in ious])
  assert m["miou"] == pytest.approx(100 * np.mean(ious))
  assert m["pixel_acc"] == pytest.approx(60.0)
  assert m["mean_class_acc"] == pytest.approx(100 * np.mean([3 / 4, 2 / 4, 1 / 2]))


def test_matches_numpy_bincount_under_jit():
  rng = np.random.default_rng(0)
  c = 19
  label = rng.integers(0, c, size=(3, 17, 23))
  label[rng.random(label.shape) < 0.2] = 255
  pred = rng.integers(0, c, size=label.shape)
  conf = jax.jit(metrics.confusion_matrix, static_argnums=2)(pred, label, c)
  assert conf.dtype == np.int32 and conf.shape == (c, c)
  np.testing.assert_array_equal(conf, _numpy_confusion(pred, label, c))


def test_shape_errors():
  with pytest.raises(ValueError, match="shape"):
    metrics.confusion_matrix(np.zeros((1, 2, 2), int), np.zeros((1, 2, 3), int), 3)
  with pytest.raises(ValueError, match="class names"):
    metrics.segmentation_metrics(np.eye(4), NAMES3)


def test_empty_confusion_gives_nan():
  m = metrics.segmentation_metrics(np.zeros((3, 3)), NAMES3)
  assert math.isnan(m["miou"]) and math.isnan(m["pixel_acc"])


def test_results_table():
  label = np.array([0, 0, 1, 1])
  good = metrics.segmentation_metrics(metrics.confusion_matrix(label, label, 3), NAMES3)
  bad = metrics.segmentation_metrics(
      metrics.confusion_matrix(np.array([0, 1, 1, 1]), label, 3), NAMES3)
  table = metrics.format_results_table([("source only", bad), ("DAKD", good)], NAMES3)
  lines = table.splitlines()
  assert lines[0].split() == ["method", "mIoU", "road", "side.", "build.", "pAcc"]
  assert lines[2].split() == ["source", "only", "58.33", "50.00", "66.67", "-", "75.00"]
  assert lines[3].split() == ["DAKD", "100.00", "100.00", "100.00", "-", "100.00"]
  assert len({len(line) for line in lines}) == 1  # aligned columns
