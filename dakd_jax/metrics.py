"""Segmentation metrics: confusion matrix (on device), IoU / mIoU / accuracies, result tables.

Conventions of the released evaluators (method.md §4.5): labels outside `[0, C)` (255 = ignore)
are dropped; IoU = TP / (TP + FP + FN); mIoU is the mean over classes whose IoU is defined (a class
absent from both ground truth and prediction is NaN and left out); the paper's "mAcc" column is
the overall pixel accuracy trace / sum. All percentages are 0-100.
"""

from collections.abc import Mapping, Sequence
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Column headers of the paper's Table 1 for the 19 Cityscapes classes; other names are cut short.
_SHORT_NAMES = {
    "road": "road", "sidewalk": "side.", "building": "build.", "wall": "wall", "fence": "fence",
    "pole": "pole", "traffic light": "light", "light": "light", "traffic sign": "sign",
    "sign": "sign", "vegetation": "veg.", "terrain": "terr.", "sky": "sky", "person": "pers.",
    "rider": "rider", "car": "car", "truck": "truck", "bus": "bus", "train": "train",
    "motorcycle": "motor", "bicycle": "bike",
}


def confusion_matrix(pred: jax.Array, label: jax.Array, num_classes: int,
                     ignore_label: int = 255) -> jax.Array:
  """Counts (ground truth, prediction) pairs. Jittable.

  Args:
    pred: integer predictions, any shape (e.g. `[N, H, W]`), values in `[0, C)`.
    label: integer ground truth, same shape; values outside `[0, C)` or equal to `ignore_label`
      are not counted (predictions outside `[0, C)` are not counted either).
    num_classes: C.
    ignore_label: the ignore value (255).

  Returns:
    int32 `[C, C]`, rows = ground truth, columns = prediction. Summed over every pixel; int32
    holds 2^31 pixels (about 1000 full Cityscapes images): accumulate over a dataset in int64 on
    the host.
  """
  if pred.shape != label.shape:
    raise ValueError(f"confusion_matrix: pred shape {pred.shape} != label shape {label.shape}")
  pred = jnp.asarray(pred, jnp.int32).reshape(-1)
  label = jnp.asarray(label, jnp.int32).reshape(-1)
  valid = ((label >= 0) & (label < num_classes) & (label != ignore_label)
           & (pred >= 0) & (pred < num_classes))
  # One histogram over label * C + pred; invalid pixels go to an extra bin that is dropped.
  index = jnp.where(valid, label * num_classes + pred, num_classes * num_classes)
  counts = jnp.bincount(index, length=num_classes * num_classes + 1)
  return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def _nanmean(x: np.ndarray) -> float:
  return float(np.mean(x[~np.isnan(x)])) if np.any(~np.isnan(x)) else math.nan


def _json_float(x: float) -> float | None:
  return None if math.isnan(x) else float(x)


def segmentation_metrics(confusion: Any, class_names: Sequence[str],
                         subset_means: Mapping[str, Sequence[int]] | None = None
                         ) -> dict[str, Any]:
  """Scores from a `[C, C]` confusion matrix (rows = ground truth, columns = prediction).

  Args:
    confusion: `[C, C]` counts.
    class_names: the C class names, in index order.
    subset_means: {metric name: class indices}: each adds the mean of those classes' defined
      IoUs under its name (SYNTHIA's 13-class 'miou_13' of a 16-class model), None where none
      of them is defined.

  Returns:
    Plain Python values, percentages 0-100: `miou` (mean of the defined IoUs), the subset means,
    `pixel_acc` (trace / sum, the paper's "mAcc"), `mean_class_acc` (mean over classes present in
    the ground truth of TP / ground-truth pixels), `num_pixels`, and `per_class_iou` {class name:
    IoU, or None where the class is in neither ground truth nor prediction}. Scores are NaN for
    an empty matrix.
  """
  confusion = np.asarray(confusion, np.float64)
  num_classes = len(class_names)
  if confusion.shape != (num_classes, num_classes):
    raise ValueError(f"segmentation_metrics: confusion shape {confusion.shape} does not match "
                     f"{num_classes} class names")
  tp = np.diag(confusion)
  gt = confusion.sum(axis=1)
  predicted = confusion.sum(axis=0)
  total = confusion.sum()
  with np.errstate(divide="ignore", invalid="ignore"):
    iou = 100.0 * tp / (gt + predicted - tp)
    class_accuracy = 100.0 * tp / gt
  return {
      "miou": _nanmean(iou),
      **{name: _json_float(_nanmean(iou[list(indices)]))
         for name, indices in (subset_means or {}).items()},
      "pixel_acc": 100.0 * float(tp.sum() / total) if total else math.nan,
      "mean_class_acc": _nanmean(class_accuracy),
      "num_pixels": int(total),
      "per_class_iou": {name: _json_float(v) for name, v in zip(class_names, iou)},
  }


def _short(name: str) -> str:
  return _SHORT_NAMES.get(name, name[:6])


def format_score(value: float | None) -> str:
  """A percentage with 2 decimals; '-' when undefined (None or NaN)."""
  return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def format_results_table(rows: Sequence[tuple[str, Mapping[str, Any]]],
                         class_names: Sequence[str], subset_means: Sequence[str] = ()) -> str:
  """Text table shaped like the paper's Table 1: name, mIoU, per-class IoUs, pixel accuracy.

  Args:
    rows: `(row name, metrics)` pairs in display order; metrics has `miou`, `pixel_acc` and
      `per_class_iou` as returned by `segmentation_metrics` (or read back from its JSON).
    class_names: the class columns, in order (names as in `per_class_iou`).
    subset_means: names of subset means in the metrics, each a column after mIoU ('miou_13' is
      headed 'mIoU13'); '-' where a row lacks it.

  Returns:
    A multi-line string, numbers with 2 decimals, '-' for undefined values.
  """
  header = (["method", "mIoU"] + [s.replace("miou_", "mIoU") for s in subset_means]
            + [_short(n) for n in class_names] + ["pAcc"])
  body = [[name] + [format_score(v) for v in [m["miou"], *(m.get(s) for s in subset_means),
                                               *(m["per_class_iou"][c] for c in class_names),
                                               m["pixel_acc"]]]
          for name, m in rows]
  name_width = max(len(r[0]) for r in [header] + body)
  widths = [max(len(r[i]) for r in [header] + body) for i in range(1, len(header))]

  def line(cells):
    return " ".join([cells[0].ljust(name_width)]
                    + [c.rjust(w) for c, w in zip(cells[1:], widths)])

  rule = "-" * len(line(header))
  return "\n".join([line(header), rule] + [line(r) for r in body])
