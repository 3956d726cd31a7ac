"""SYNTHIA-RAND-CITYSCAPES: 16-bit label reading, the builder on a tiny folder in the official
layout (read at 16 and 19 classes), one-line errors, the 16-class Cityscapes table, the 13-class
mIoU* (arithmetic and evaluation), and `configs/diga_synthia2cs.py`."""

import json
import struct
import sys
import zlib

import jax
import numpy as np
from PIL import Image
import pytest

from configs import diga_synthia2cs
from dakd_jax import config as config_lib
from dakd_jax import errors
from dakd_jax import evaluate
from dakd_jax import metrics
from dakd_jax import networks
from dakd_jax import stages as stages_lib
from dakd_jax.data import labels
from dakd_jax.data import pipeline
from dakd_jax.data.builders import synthia

H, W = 12, 20
# The official tables, written out: DiGA's SYNTHIALoader `id_to_trainid` (16 classes), the
# BDL/MuHDi one (19 classes) and DiGA's Synthia/CityLoader (Cityscapes label id -> 16 classes).
SYNTHIA_16 = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12,
              19: 13, 12: 14, 11: 15}
SYNTHIA_19 = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11,
              17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
CITYSCAPES_16 = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 23: 9, 24: 10,
                 25: 11, 26: 12, 28: 13, 32: 14, 33: 15}
_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type


def png16(pixels: np.ndarray) -> bytes:
  """Encodes uint16 [H, W, C] (C = 1, 3 or 4) as a 16-bit PNG, cycling through the five row
  filters (None, Sub, Up, Average, Paeth) as encoders that choose per row do."""
  h, w, c = pixels.shape
  bpp = 2 * c
  raw = pixels.astype('>u2').view(np.uint8).reshape(h, w * bpp).astype(np.int64)
  rows = []
  for y in range(h):
    cur = raw[y]
    up = raw[y - 1] if y else np.zeros_like(cur)
    left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
    upleft = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    pred = [np.zeros_like(cur), left, up, (left + up) // 2, paeth][y % 5]
    rows.append(bytes([y % 5]) + ((cur - pred) % 256).astype(np.uint8).tobytes())

  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

  header = struct.pack('>IIBBBBB', w, h, 16, _COLOUR_TYPES[c], 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) +
          chunk(b'IDAT', zlib.compress(b''.join(rows))) + chunk(b'IEND', b''))


def label_pixels(rng, ids: np.ndarray, channels: int = 3) -> np.ndarray:
  """A SYNTHIA-like label: ids in channel 0, random 16-bit values (instance ids) elsewhere."""
  pixels = rng.integers(0, 65536, size=ids.shape + (channels,)).astype(np.uint16)
  pixels[..., 0] = ids
  return pixels


def write_synthia(root, num_images=3, size=(H, W)):
  """<root>/RGB/NNNNNNN.png and <root>/GT/LABELS/NNNNNNN.png; returns {name: ids}."""
  rng = np.random.default_rng(0)
  (root / 'RGB').mkdir(parents=True)
  (root / 'GT' / 'LABELS').mkdir(parents=True)
  written = {}
  for i in range(num_images):
    name = f'{i:07d}'
    ids = rng.integers(0, 23, size=size).astype(np.uint16)
    ids[0, :3] = (300, 255, 65535)  # Ids no class has: ignored, however large.
    Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(
        root / 'RGB' / f'{name}.png')
    (root / 'GT' / 'LABELS' / f'{name}.png').write_bytes(png16(label_pixels(rng, ids, 3 + i % 2)))
    written[name] = ids
  return written


def _table(pairs):
  return np.array([pairs.get(i, 255) for i in range(65536)])


@pytest.mark.parametrize('channels', [1, 3, 4])
def test_read_label_keeps_every_bit_of_channel_0(channels, tmp_path):
  rng = np.random.default_rng(channels)
  pixels = label_pixels(rng, rng.integers(0, 65536, size=(9, 7)), channels)
  path = tmp_path / 'label.png'
  path.write_bytes(png16(pixels))
  out = synthia.read_label(path)
  assert out.dtype == np.uint16
  np.testing.assert_array_equal(out, pixels[..., 0])


def test_official_16_and_19_class_tables():
  ids = np.arange(256, dtype=np.uint8)
  for space, num_classes, table in (('synthia_id', 16, SYNTHIA_16),
                                    ('synthia_id', 19, SYNTHIA_19), ('label_id', 16, CITYSCAPES_16)):
    np.testing.assert_array_equal(labels.to_train_ids(ids, space, num_classes), _table(table)[:256])
  # BDD100K train ids in 16 classes: terrain (9), truck (14) and train (16) are ignored.
  train = labels.to_train_ids(np.arange(19, dtype=np.uint8), 'train_id', 16)
  assert [int(train[t]) for t in (9, 14, 16)] == [255] * 3
  assert labels.class_names(16) == labels.SYNTHIA_16_CLASS_NAMES


@pytest.mark.parametrize('num_classes, table', [(16, SYNTHIA_16), (19, SYNTHIA_19)])
def test_builder_reads_the_official_layout(num_classes, table, tmp_path):
  written = write_synthia(tmp_path / 'synthia')
  reference = _table(table)
  eval_set = pipeline.EvalSet(dataset='synthia', root=str(tmp_path / 'synthia'), split='train',
                              num_classes=num_classes)
  batches = list(pipeline.make_eval_dataset(eval_set, batch_size=2, data_dir=tmp_path / 'tfds'))
  got = {name: label for b in batches for name, label in zip(b['name'], b['label'])}
  assert sorted(got) == sorted(written)
  for name, ids in written.items():
    np.testing.assert_array_equal(got[name], reference[ids])
  assert batches[0]['image'].shape[1:] == (H, W, 3)
  assert 'tensorflow' not in sys.modules


def _one_line_error(tmp_path, match):
  stream = pipeline.Stream(dataset='synthia', root=str(tmp_path / 'synthia'), num_classes=16)
  with pytest.raises(errors.UserError, match=match) as info:
    pipeline.prepare(stream, tmp_path / 'tfds')
  assert '\n' not in str(info.value)
  return str(info.value)


def test_missing_root_and_label_are_one_line_errors(tmp_path):
  _one_line_error(tmp_path, 'root .*synthia does not exist; expected <root>/RGB')
  write_synthia(tmp_path / 'synthia', num_images=2)
  (tmp_path / 'synthia' / 'GT' / 'LABELS' / '0000001.png').unlink()
  _one_line_error(tmp_path, r'label .*GT/LABELS/0000001\.png for image .* is missing')


@pytest.mark.parametrize('label, match', [
    (lambda: Image.fromarray(np.zeros((H, W), np.uint8)), r'^SYNTHIA label .*0000001\.png is a '
     'PNG of 8-bit grey samples; expected the 16-bit'),
    (lambda: Image.fromarray(np.zeros((H, W, 3), np.uint8)), r'0000001\.png is a PNG of 8-bit RGB'),
    (lambda: png16(np.zeros((H, W + 1, 3), np.uint16)),
     r'0000001\.png is 21x12 \(width x height\)'),
    (lambda: png16(np.zeros((H, W, 3), np.uint16))[:-40], r'cannot decode SYNTHIA label .*0000001'),
    (lambda: b'not a png', r'cannot read .*0000001\.png'),
])
def test_bad_labels_are_one_line_errors_naming_the_file(label, match, tmp_path):
  write_synthia(tmp_path / 'synthia', num_images=2)
  path = tmp_path / 'synthia' / 'GT' / 'LABELS' / '0000001.png'
  value = label()
  if isinstance(value, bytes):
    path.write_bytes(value)
  else:
    value.save(path)
  message = _one_line_error(tmp_path, match)
  assert '0000000' not in message


def test_13_class_mean_is_the_mean_of_13_of_the_16_ious():
  rng = np.random.default_rng(0)
  confusion = rng.integers(0, 50, size=(16, 16))
  confusion[4] = confusion[:, 4] = 0  # fence absent: its IoU undefined, left out of miou only.
  confusion[12] = confusion[:, 12] = 0  # car absent: left out of both means.
  scores = metrics.segmentation_metrics(confusion, labels.class_names(16), labels.subset_means(16))
  tp = np.diag(confusion).astype(float)
  with np.errstate(invalid='ignore'):  # The absent classes' 0 / 0.
    iou = 100 * tp / (confusion.sum(0) + confusion.sum(1) - tp)
  names13 = [n for n in labels.SYNTHIA_16_CLASS_NAMES if n not in ('wall', 'fence', 'pole', 'car')]
  by_name = dict(zip(labels.SYNTHIA_16_CLASS_NAMES, iou))
  assert scores['miou_13'] == pytest.approx(np.mean([by_name[n] for n in names13]))
  assert scores['miou'] == pytest.approx(np.nanmean(iou))
  assert scores['per_class_iou']['car'] is None
  table = metrics.format_results_table([('DiGA', scores)], labels.class_names(16), ['miou_13'])
  header, _, row = table.splitlines()
  assert header.split()[:3] == ['method', 'mIoU', 'mIoU13']
  assert row.split()[1:3] == [f"{scores['miou']:.2f}", f"{scores['miou_13']:.2f}"]
  assert 'miou_13' not in metrics.segmentation_metrics(confusion, labels.class_names(16))


def test_synthia2cs_config_has_the_official_synthia_settings(tmp_path):
  config = diga_synthia2cs.get_config()
  config_lib.validate(config)
  assert config.num_classes == 16
  assert config.pipeline == ('translator', 'warmup', 'selftrain1', 'selftrain2')
  # The SYNTHIA translator script: SYNTHIA at 760x1280, self-reconstruction weight 0.025.
  translator = config.stages.translator
  assert translator.source.dataset == 'synthia' and translator.source.size == (760, 1280)
  assert translator.options.lambda_self == 0.025 and 'GTA5' not in translator.deviations
  assert 'Synthia/train_domain_translator' in translator.reference
  # (steps, batch, lambda_distil, random rescale) of the official scripts.
  expected = {'warmup': (60_000, 4, 0.25, None), 'selftrain1': (80_000, 3, 0.25, (0.7, 1.0)),
              'selftrain2': (80_000, 3, 0.25, (0.7, 1.0))}
  for name, (steps, batch, distil, rescale) in expected.items():
    stage = config.stages[name]
    assert (stage.num_steps, stage.batch_size) == (steps, batch)
    assert stage.options.lambda_distil == distil
    assert stage.source.dataset == 'synthia' and stage.source.size == (760, 1280)
    assert stage.source.sizes == ((760, 1280),) + ((1140, 1920),) * (batch - 1)
    assert stage.target.sizes == ((512, 1024),) + ((1024, 2048),) * (batch - 1)
    assert stage.source.augment.random_scale == rescale
    assert stage.source.augment.crop == (512, 896) and stage.source.augment.crop_redraws == 5
    assert stage.target.dataset == 'cityscapes' and stage.options.seg_loss == 'ohem'
    probs = (0.7, 0.1) if name == 'warmup' else (0.5, 0.3)  # Colour jitter, grayscale.
    assert (stage.options.jitter_p, stage.options.gray_p) == probs
    assert 'Synthia/train_DiGA_synthia2city' in stage.reference
  assert config.eval.scales == (1.0, 0.5) and config.eval.input_size == (1024, 2048)
  # Planned with the stand-in translation (the real one needs the translator stage's VGG).
  config.pipeline = ('warmup', 'selftrain1', 'selftrain2')
  for name in config.pipeline:
    config.stages[name].options.translation = 'colour_stats'
    del config.stages[name].frozen['translator']
  plan = stages_lib.plan(config, str(tmp_path))
  assert [s.network['num_classes'] for s in plan] == [16] * 3
  assert [(s.source.num_classes, s.target.num_classes) for s in plan] == [(16, 16)] * 3


def test_a_dataset_without_a_mapping_to_the_label_set_fails_at_planning(tmp_path):
  config = diga_synthia2cs.get_config()
  config.num_classes = 7  # MuHDi's super-classes have no SYNTHIA mapping.
  config.translator = str(tmp_path)
  with pytest.raises(errors.UserError, match='stages.translator.source.dataset: synthia .synthia_id '
                     'labels. has no mapping to num_classes 7'):
    stages_lib.plan(config, str(tmp_path))


def test_evaluation_at_16_classes_reports_the_13_class_mean(tmp_path):
  write_synthia(tmp_path / 'synthia', num_images=2)
  spec = {'arch': 'drn_d_22', 'num_classes': 16, 'options': {'width': 1 / 16}}
  variables = networks.init_variables(networks.create_segmentation_model(spec),
                                      jax.random.PRNGKey(0))
  eval_set = pipeline.EvalSet(dataset='synthia', root=str(tmp_path / 'synthia'), split='train',
                              input_size=(32, 64), num_classes=16)
  evaluator = evaluate.Evaluator(eval_set, batch_size=8, num_classes=16, compute_dtype='float32',
                                 data_dir=tmp_path / 'tfds')
  (tmp_path / 'eval').mkdir()
  result = evaluator(spec, variables, str(tmp_path / 'eval'))
  ious = [result['per_class_iou'][labels.SYNTHIA_16_CLASS_NAMES[i]]
          for i in labels.SYNTHIA_13_INDICES]
  assert result['miou_13'] == pytest.approx(np.mean([v for v in ious if v is not None]))
  with open(tmp_path / 'eval' / evaluate.METRICS_FILE) as f:
    assert json.load(f)['miou_13'] == pytest.approx(result['miou_13'])
