"""The one class table: Cityscapes label ids, train ids and colours, the label sets (19, 7, 16).

GTA5 labels use the Cityscapes label ids, BDD100K's semantic masks are already train ids, so every
dataset of the project maps through the lookups derived here. Train id 255 means "ignore".
"""

import typing

import numpy as np

from dakd_jax import errors

IGNORE_LABEL = 255


class Label(typing.NamedTuple):
  name: str
  id: int  # value stored in Cityscapes `*_gtFine_labelIds.png` and GTA5 label PNGs
  train_id: int  # 0..18, or 255 / -1 (official table) for classes ignored in training
  color: tuple[int, int, int]  # RGB


# The full Cityscapes label list (cityscapesScripts `helpers/labels.py`), in id order.
CITYSCAPES_LABELS = (
    Label('unlabeled', 0, 255, (0, 0, 0)),
    Label('ego vehicle', 1, 255, (0, 0, 0)),
    Label('rectification border', 2, 255, (0, 0, 0)),
    Label('out of roi', 3, 255, (0, 0, 0)),
    Label('static', 4, 255, (0, 0, 0)),
    Label('dynamic', 5, 255, (111, 74, 0)),
    Label('ground', 6, 255, (81, 0, 81)),
    Label('road', 7, 0, (128, 64, 128)),
    Label('sidewalk', 8, 1, (244, 35, 232)),
    Label('parking', 9, 255, (250, 170, 160)),
    Label('rail track', 10, 255, (230, 150, 140)),
    Label('building', 11, 2, (70, 70, 70)),
    Label('wall', 12, 3, (102, 102, 156)),
    Label('fence', 13, 4, (190, 153, 153)),
    Label('guard rail', 14, 255, (180, 165, 180)),
    Label('bridge', 15, 255, (150, 100, 100)),
    Label('tunnel', 16, 255, (150, 120, 90)),
    Label('pole', 17, 5, (153, 153, 153)),
    Label('polegroup', 18, 255, (153, 153, 153)),
    Label('traffic light', 19, 6, (250, 170, 30)),
    Label('traffic sign', 20, 7, (220, 220, 0)),
    Label('vegetation', 21, 8, (107, 142, 35)),
    Label('terrain', 22, 9, (152, 251, 152)),
    Label('sky', 23, 10, (70, 130, 180)),
    Label('person', 24, 11, (220, 20, 60)),
    Label('rider', 25, 12, (255, 0, 0)),
    Label('car', 26, 13, (0, 0, 142)),
    Label('truck', 27, 14, (0, 0, 70)),
    Label('bus', 28, 15, (0, 60, 100)),
    Label('caravan', 29, 255, (0, 0, 90)),
    Label('trailer', 30, 255, (0, 0, 110)),
    Label('train', 31, 16, (0, 80, 100)),
    Label('motorcycle', 32, 17, (0, 0, 230)),
    Label('bicycle', 33, 18, (119, 11, 32)),
    Label('license plate', -1, -1, (0, 0, 142)),
)

# The 19 train classes, in train-id order.
TRAIN_LABELS = tuple(sorted((l for l in CITYSCAPES_LABELS if 0 <= l.train_id < IGNORE_LABEL),
                            key=lambda l: l.train_id))
NUM_CLASSES = len(TRAIN_LABELS)
CLASS_NAMES = tuple(l.name for l in TRAIN_LABELS)
PALETTE = np.array([l.color for l in TRAIN_LABELS], dtype=np.uint8)  # [19, 3] RGB


def _lut(pairs) -> np.ndarray:
  """A 256-entry uint8 lookup table: every value not in `pairs` maps to IGNORE_LABEL."""
  lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
  for src, dst in pairs:
    lut[src] = dst
  return lut


# Label id (0..255) -> train id; unknown ids (and all ignored classes) -> 255.
ID_TO_TRAIN_ID = _lut((l.id, l.train_id) for l in TRAIN_LABELS)
# Train id -> train id, for masks already in train ids (BDD100K): anything >= 19 becomes 255.
TRAIN_ID_TO_TRAIN_ID = _lut((t, t) for t in range(NUM_CLASSES))

# Train id -> Cityscapes label id (cityscapesScripts' prediction format); ignore (255) -> 0,
# 'unlabeled', which cityscapesScripts ignores in evaluation.
TRAIN_ID_TO_ID = np.zeros(256, dtype=np.uint8)
TRAIN_ID_TO_ID[[l.train_id for l in TRAIN_LABELS]] = [l.id for l in TRAIN_LABELS]

# Which lookup maps a dataset's stored label space to train ids.
LABEL_SPACE_LUTS = {'label_id': ID_TO_TRAIN_ID, 'train_id': TRAIN_ID_TO_TRAIN_ID}

# MuHDi's 7 super-classes (its `info7class.json` tables and Mapillary mapping, method.md §7.3).
SUPER_CLASS_NAMES = ('flat', 'construction', 'object', 'nature', 'sky', 'human', 'vehicle')
_SUPER = {name: i for i, name in enumerate(SUPER_CLASS_NAMES)}
# Cityscapes/GTA5 label id -> super-class (caravan 29 and trailer 30 are vehicles here).
_CITYSCAPES_SUPER = {7: 'flat', 8: 'flat', 11: 'construction', 12: 'construction',
                     13: 'construction', 17: 'object', 19: 'object', 20: 'object', 21: 'nature',
                     22: 'nature', 23: 'sky', 24: 'human', 25: 'human',
                     **{i: 'vehicle' for i in range(26, 34)}}
# IDD label id (`*_gtFine_labelids.png`, ids 0..39) -> super-class; ids not listed are ignored.
_IDD_SUPER = {0: 'flat', 2: 'flat', 3: 'flat', 6: 'human', 8: 'human',
              **{i: 'vehicle' for i in range(9, 19)}, 19: 'construction', 20: 'construction',
              21: 'construction', 23: 'object', 24: 'object', 25: 'object', 26: 'object',
              29: 'construction', 32: 'nature', 33: 'sky'}
# Mapillary Vistas v1.2 label id (the order of its config.json) -> super-class, None = ignored.
MAPILLARY_SUPER = (
    ('Bird', None), ('Ground Animal', None), ('Curb', 'construction'),
    ('Fence', 'construction'), ('Guard Rail', 'construction'), ('Barrier', 'construction'),
    ('Wall', 'construction'), ('Bike Lane', 'flat'), ('Crosswalk - Plain', 'flat'),
    ('Curb Cut', 'flat'), ('Parking', 'flat'), ('Pedestrian Area', 'flat'),
    ('Rail Track', 'flat'), ('Road', 'flat'), ('Service Lane', 'flat'), ('Sidewalk', 'flat'),
    ('Bridge', 'construction'), ('Building', 'construction'), ('Tunnel', 'construction'),
    ('Person', 'human'), ('Bicyclist', 'human'), ('Motorcyclist', 'human'),
    ('Other Rider', 'human'), ('Lane Marking - Crosswalk', 'flat'),
    ('Lane Marking - General', 'flat'), ('Mountain', None), ('Sand', None), ('Sky', 'sky'),
    ('Snow', None), ('Terrain', 'flat'), ('Vegetation', 'nature'), ('Water', None),
    ('Banner', None), ('Bench', None), ('Bike Rack', None), ('Billboard', None),
    ('Catch Basin', None), ('CCTV Camera', None), ('Fire Hydrant', None), ('Junction Box', None),
    ('Mailbox', None), ('Manhole', None), ('Phone Booth', None), ('Pothole', 'object'),
    ('Street Light', 'object'), ('Pole', 'object'), ('Traffic Sign Frame', 'object'),
    ('Utility Pole', 'object'), ('Traffic Light', 'object'), ('Traffic Sign (Back)', 'object'),
    ('Traffic Sign (Front)', 'object'), ('Trash Can', None), ('Bicycle', 'vehicle'),
    ('Boat', 'vehicle'), ('Bus', 'vehicle'), ('Car', 'vehicle'), ('Caravan', 'vehicle'),
    ('Motorcycle', 'vehicle'), ('On Rails', 'vehicle'), ('Other Vehicle', 'vehicle'),
    ('Trailer', 'vehicle'), ('Truck', 'vehicle'), ('Wheeled Slow', 'vehicle'),
    ('Car Mount', None), ('Ego Vehicle', None), ('Unlabeled', None))
SUPER_LABEL_SPACE_LUTS = {
    'label_id': _lut((i, _SUPER[n]) for i, n in _CITYSCAPES_SUPER.items()),
    # Train ids (BDD100K) through their Cityscapes label id.
    'train_id': _lut((l.train_id, _SUPER[_CITYSCAPES_SUPER[l.id]]) for l in TRAIN_LABELS
                     if l.id in _CITYSCAPES_SUPER),
    'idd_id': _lut((i, _SUPER[n]) for i, n in _IDD_SUPER.items()),
    'mapillary_id': _lut((i, _SUPER[n]) for i, (_, n) in enumerate(MAPILLARY_SUPER) if n),
}


def colorize(train_ids: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
  """Colours a class map [..., H, W] of the `num_classes` label set into RGB uint8
  [..., H, W, 3] with that set's palette; ignore (>= num_classes) is black."""
  table = np.zeros((256, 3), dtype=np.uint8)
  table[:num_classes] = label_set(num_classes).palette
  return table[np.clip(train_ids, 0, 255).astype(np.int64)]


def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
  """Maps a train-id map (uint8, any shape) to Cityscapes label ids (uint8); 255 -> 0."""
  return TRAIN_ID_TO_ID[train_ids]


def overlay(image: np.ndarray, train_ids: np.ndarray, alpha: float = 0.5,
            num_classes: int = NUM_CLASSES) -> np.ndarray:
  """Blends the colour prediction over the image: uint8 RGB [H, W, 3] and class ids [H, W] ->
  uint8 RGB [H, W, 3], `(1 - alpha) * image + alpha * colour` (rounded); ignore keeps the image."""
  colour = colorize(train_ids, num_classes).astype(np.float32)
  blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colour
  blend = np.where((train_ids < num_classes)[..., None], blend, image)
  return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


# --- SYNTHIA-RAND-CITYSCAPES -------------------------------------------------------------------
# SYNTHIA class id -> 19-class train name (the BDL/MuHDi lineage mapping).
_SYNTHIA_ID_TO_NAME = {
    3: 'road', 4: 'sidewalk', 2: 'building', 21: 'wall', 5: 'fence', 7: 'pole', 15: 'traffic light',
    9: 'traffic sign', 6: 'vegetation', 16: 'terrain', 1: 'sky', 10: 'person', 17: 'rider',
    8: 'car', 18: 'truck', 19: 'bus', 20: 'train', 12: 'motorcycle', 11: 'bicycle',
}
_NAME_TO_TRAIN_ID = {name: i for i, name in enumerate(CLASS_NAMES)}
SYNTHIA_ID_TO_TRAIN_ID = _lut((sid, _NAME_TO_TRAIN_ID[n]) for sid, n in _SYNTHIA_ID_TO_NAME.items())

# 16-class protocol: the 19 classes without terrain, truck and train, renumbered 0..15.
SYNTHIA_16_CLASS_NAMES = tuple(n for n in CLASS_NAMES if n not in ('terrain', 'truck', 'train'))
SYNTHIA_ID_TO_16 = _lut((sid, SYNTHIA_16_CLASS_NAMES.index(n))
                        for sid, n in _SYNTHIA_ID_TO_NAME.items() if n in SYNTHIA_16_CLASS_NAMES)
# 13-class protocol (mIoU*): indices into the 16 classes, without wall, fence and pole. It is the
# mean of these 13 per-class IoUs of the 16-class model, not a separate model.
SYNTHIA_13_INDICES = tuple(i for i, n in enumerate(SYNTHIA_16_CLASS_NAMES)
                           if n not in ('wall', 'fence', 'pole'))
SYNTHIA_13_CLASS_NAMES = tuple(SYNTHIA_16_CLASS_NAMES[i] for i in SYNTHIA_13_INDICES)


# 16-class lookups from the other datasets' label spaces (Cityscapes ids, BDD100K train ids):
# through the class names, so terrain, truck and train are ignored.
_TRAIN_ID_TO_16 = _lut((t, SYNTHIA_16_CLASS_NAMES.index(n)) for t, n in enumerate(CLASS_NAMES)
                       if n in SYNTHIA_16_CLASS_NAMES)
SYNTHIA_16_LABEL_SPACE_LUTS = {
    'synthia_id': SYNTHIA_ID_TO_16,
    'label_id': _TRAIN_ID_TO_16[ID_TO_TRAIN_ID],
    'train_id': _TRAIN_ID_TO_16,
}


class LabelSet(typing.NamedTuple):
  """A label set: what a network with `len(names)` outputs predicts and is scored on.

  Attributes:
    names: the class names, in output order.
    luts: {stored label space: 256-entry uint8 lookup to this set's ids (255 = ignore)}.
    palette: [len(names), 3] uint8 RGB colours of the classes (prediction PNGs, grid legend).
    subset_means: {metric name: class indices}; the evaluation reports each as the mean of those
      classes' IoUs next to the mIoU over all of them (SYNTHIA-16's 13-class mIoU*).
  """
  names: tuple[str, ...]
  luts: dict[str, np.ndarray]
  palette: np.ndarray
  subset_means: dict[str, tuple[int, ...]] = {}


def _cityscapes_colours(names: typing.Sequence[str]) -> np.ndarray:
  """[len(names), 3] the Cityscapes colours of Cityscapes class names (SYNTHIA-16 keeps them)."""
  return PALETTE[[CLASS_NAMES.index(n) for n in names]]


# Classes -> label set. MuHDi's 7 super-classes are coloured with the first 7 Cityscapes colours,
# as its official palette does.
LABEL_SETS = {
    NUM_CLASSES: LabelSet(CLASS_NAMES, {**LABEL_SPACE_LUTS, 'synthia_id': SYNTHIA_ID_TO_TRAIN_ID},
                          PALETTE),
    len(SUPER_CLASS_NAMES): LabelSet(SUPER_CLASS_NAMES, SUPER_LABEL_SPACE_LUTS,
                                     PALETTE[:len(SUPER_CLASS_NAMES)]),
    len(SYNTHIA_16_CLASS_NAMES): LabelSet(SYNTHIA_16_CLASS_NAMES, SYNTHIA_16_LABEL_SPACE_LUTS,
                                          _cityscapes_colours(SYNTHIA_16_CLASS_NAMES),
                                          {'miou_13': SYNTHIA_13_INDICES}),
}


def label_set(num_classes: int = NUM_CLASSES) -> LabelSet:
  """The label set of `num_classes`: 19 Cityscapes train classes, MuHDi's 7 super-classes or
  SYNTHIA's 16 classes; a one-line error naming the valid counts otherwise."""
  if num_classes not in LABEL_SETS:
    raise errors.UserError(f'num_classes: expected one of {sorted(LABEL_SETS)} (the label sets '
                           f'of dakd_jax.data.labels), got {num_classes!r}')
  return LABEL_SETS[num_classes]


def class_names(num_classes: int = NUM_CLASSES) -> tuple[str, ...]:
  """The class names of the `num_classes` label set, in output order."""
  return label_set(num_classes).names


def subset_means(num_classes: int = NUM_CLASSES) -> dict[str, tuple[int, ...]]:
  """{metric name: class indices} averaged next to the mIoU (`LabelSet.subset_means`)."""
  return label_set(num_classes).subset_means


CLASS_ID = 'class_id'  # Labels already in a label set's ids (pseudo-labels): kept, rest 255.


def label_lut(space: str, num_classes: int = NUM_CLASSES) -> np.ndarray:
  """The 256-entry lookup from labels stored in `space` to the `num_classes` label set; a
  one-line error when that set has none (e.g. IDD ids at 19 classes). `CLASS_ID` labels map to
  themselves below `num_classes` and to 255 above."""
  if space == CLASS_ID:
    return np.where(np.arange(256) < num_classes, np.arange(256), IGNORE_LABEL).astype(np.uint8)
  luts = label_set(num_classes).luts
  if space not in luts:
    raise errors.UserError(f'{space} labels have no mapping to {num_classes} classes; '
                           f'num_classes {num_classes} reads {", ".join(luts)} labels')
  return luts[space]


def to_train_ids(label: np.ndarray, space: str, num_classes: int = NUM_CLASSES) -> np.ndarray:
  """Maps a uint8 label map stored in `space` ('label_id' | 'train_id' | 'idd_id' |
  'mapillary_id' | 'synthia_id' | 'class_id') to int32 ids of the `num_classes` label set
  (255 = ignore)."""
  return label_lut(space, num_classes)[label].astype(np.int32)
