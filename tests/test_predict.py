"""`python -m dakd_jax.predict`: the evaluation's predictions, cityscapesScripts' mIoU, batching by
size, unreadable inputs, videos, and one-line usage errors."""

import glob
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from dakd_jax import errors
from dakd_jax import experiment
from dakd_jax import networks
from dakd_jax.data import labels
from dakd_jax.tools import image_inputs
from dakd_jax.tools import predict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def _png(path):
  return np.asarray(Image.open(path))


def _cityscapes_scripts_scores(label_ids_dir, gt_dir):
  """cityscapesScripts' pixel-level evaluation of `label_ids_dir` against `gt_dir`'s labelIds,
  as its command line runs it (predictions found by file name), without instance scores (the
  synthetic set has no instanceIds files)."""
  from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval  # pylint: disable=g-import-not-at-top
  args = cs_eval.args
  args.predictionPath, args.predictionWalk = label_ids_dir, None
  args.evalInstLevelScore, args.quiet, args.JSONOutput = False, True, False
  ground_truth = sorted(glob.glob(os.path.join(gt_dir, '*', '*_gtFine_labelIds.png')))
  found = [cs_eval.getPrediction(args, gt) for gt in ground_truth]
  return cs_eval.evaluateImgLists(found, ground_truth, args)


def test_predictions_are_the_evaluations_and_score_the_same_in_cityscapes_scripts(
    tiny_config, tiny_student_dir, tmp_path):
  config = tiny_config()
  root = config.roots.cityscapes
  spec, variables = networks.load_network(tiny_student_dir)
  metrics = experiment.make_evaluator(config)(spec, variables, str(tmp_path / 'eval'),
                                              save_predictions=True)
  out = tmp_path / 'predict'
  size = ','.join(map(str, config.eval.input_size))
  assert predict.main(['--model', tiny_student_dir, '--input', os.path.join(root, 'leftImg8bit', 'val'),
                       '--out', str(out), '--input-size', size, '--batch-size', '3']) == 0

  evaluated = sorted(glob.glob(str(tmp_path / 'eval' / 'pred' / '*_leftImg8bit.png')))
  assert len(evaluated) == metrics['num_images'] == 6
  for path in evaluated:
    name = os.path.basename(path)
    city = name.split('_')[0]
    mine = _png(out / 'train_ids' / city / name)
    np.testing.assert_array_equal(mine, _png(path))  # Bit for bit, at full label resolution.
    assert len(np.unique(mine)) >= 3  # A non-trivial prediction.
    np.testing.assert_array_equal(_png(out / 'label_ids' / city / name),
                                  labels.to_label_ids(mine))
    np.testing.assert_array_equal(_png(out / 'color' / city / name), labels.colorize(mine))
    assert _png(out / 'overlay' / city / name).shape == (*mine.shape, 3)

  scores = _cityscapes_scripts_scores(str(out / 'label_ids'), os.path.join(root, 'gtFine', 'val'))
  assert 100 * scores['averageScoreClasses'] == pytest.approx(metrics['miou'], abs=1e-9)
  for name, iou in metrics['per_class_iou'].items():
    cs_iou = scores['classScores'][name]
    assert (iou is None and np.isnan(cs_iou)) or 100 * cs_iou == pytest.approx(iou, abs=1e-9)


def _random_image(path, h, w, seed):
  rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(rgb).save(path)


def test_images_of_any_size_batched_per_size_and_unreadable_ones_skipped(tiny_student_dir,
                                                                         tmp_path, capsys,
                                                                         monkeypatch):
  folder = tmp_path / 'in'
  sizes = {'a/0.png': (40, 72), 'a/1.jpg': (40, 72), 'b/2.png': (40, 72), '3.png': (33, 50),
           '4.bmp': (33, 50)}
  for i, (name, (h, w)) in enumerate(sizes.items()):
    _random_image(str(folder / name), h, w, seed=i)
  (folder / 'b' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n truncated')
  (folder / 'notes.txt').write_text('not an image')  # Not an image suffix: ignored.
  items, total = image_inputs.find_inputs(str(folder))
  assert total == 6 and [i.name for i in items] == ['3', '4', 'a/0', 'a/1', 'b/2', 'b/broken']

  built, segmenter_class = [], predict.Segmenter

  def segmenter(*args, **kwargs):  # Keeps the CLI's Segmenter to count its compiled programs.
    built.append(segmenter_class(*args, **kwargs))
    return built[-1]

  monkeypatch.setattr(predict, 'Segmenter', segmenter)
  out = tmp_path / 'out'
  status = predict.main(['--model', tiny_student_dir, '--input', str(folder), '--out', str(out),
                         '--input-size', 'keep', '--batch-size', '2',
                         '--outputs', 'train_ids,label_ids'])
  captured = capsys.readouterr()
  assert status == 1  # Some inputs were skipped.
  assert 'predicted 5 images' in captured.out and '1 unreadable inputs skipped' in captured.out
  skipped = [line for line in captured.err.splitlines() if line.startswith('skipped')]
  assert skipped == [f'skipped {folder / "b" / "broken.png"}: cannot decode image '
                     f'{folder / "b" / "broken.png"}: ' + skipped[0].rsplit(': ', 1)[-1]]
  # Two sizes (three and two images) with a batch of 8 (2 rounded up to the 8 simulated devices):
  # one program per size, the short batches padded.
  assert built[0].batch_size == 8 and built[0].step._cache_size() == 2
  assert sorted(os.listdir(out)) == ['label_ids', 'train_ids']
  for name, (h, w) in sizes.items():
    stem = os.path.splitext(name)[0]
    pred = _png(out / 'train_ids' / f'{stem}.png')
    assert pred.shape == (h, w) and pred.max() < labels.NUM_CLASSES  # At the input's own size.
    np.testing.assert_array_equal(_png(out / 'label_ids' / f'{stem}.png'),
                                  labels.to_label_ids(pred))


def test_video_frames_are_named_in_order_and_a_decoding_failure_is_one_skipped_item(tmp_path):
  def imiter(path):
    del path
    for i in range(3):
      yield np.full((4, 6, 3), i, np.uint8)
    raise OSError('corrupt packet\nat 0x1f')

  items = list(image_inputs._frames(imiter, tmp_path / 'drive.mp4'))
  assert [i.name for i in items] == [f'drive/drive_{i:06d}' for i in range(4)]
  assert np.asarray(items[2].read()).max() == 2 and items[2].read().mode == 'RGB'
  with pytest.raises(ValueError, match='cannot decode video .*drive.mp4 after 3 frames: corrupt '
                     'packet at 0x1f'):
    items[3].read()


def _run_cli(args):
  return subprocess.run([sys.executable, '-m', 'dakd_jax.predict', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_bad_usage_is_one_line_and_exit_status_2(tiny_student_dir, tmp_path, monkeypatch, capsys):
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'clip.mp4').write_bytes(b'')
  monkeypatch.setitem(sys.modules, 'imageio', None)  # As on this machine: no video decoder.
  missing_model = str(tmp_path / 'no_model')
  cases = {
      (missing_model, str(tmp_path)): f'--model {missing_model}: no such directory; expected a '
                                      'variables directory',
      (str(tmp_path), str(tmp_path)): f'--model {tmp_path}: no model.json',
      (tiny_student_dir, str(tmp_path / 'nope.png')): f'--input {tmp_path / "nope.png"}: no such file '
                                                 'or directory; expected an image, a folder',
      (tiny_student_dir, str(tmp_path / 'empty')): f'--input {tmp_path / "empty"}: no images',
      (tiny_student_dir, str(tmp_path / 'clip.mp4')): f'--input {tmp_path / "clip.mp4"}: reading '
                                                 'videos needs imageio with a video plugin',
  }
  for (model, source), message in cases.items():
    with pytest.raises(errors.UserError, match='^' + message.replace('(', r'\(')):
      predict._main(predict._parser().parse_args(
          ['--model', model, '--input', source, '--out', str(tmp_path / 'o')]))
  # Through the real entry point: status 2, the one line on stderr, no traceback.
  run = _run_cli(['--model', missing_model, '--input', str(tmp_path), '--out', 'o'])
  assert run.returncode == 2 and run.stdout == ''
  assert run.stderr.strip().splitlines() == [
      f'python -m dakd_jax.predict: error: --model {missing_model}: no such directory; expected '
      "a variables directory (model.json and variables/, written by a finished stage's export/ "
      'or by python -m dakd_jax.tools.convert)']
  assert predict.main(['--model', tiny_student_dir, '--input', str(tmp_path), '--out', 'o',
                       '--input-size', '512']) == 2
  assert capsys.readouterr().err.splitlines() == [
      "python -m dakd_jax.predict: error: argument --input-size: '512': expected H,W (two "
      'positive integers)']


def test_a_7_class_network_gets_its_own_colours_and_no_cityscapes_ids(random_network_dir,
                                                                      tmp_path):
  """MuHDi's 7 super-classes: colour PNGs in the 7-class palette; label ids (Cityscapes'
  19-class ids) are left out by default and refused when asked for."""
  spec = {'arch': 'drn_d_22', 'num_classes': 7, 'options': {'width': 1 / 16, 'aux_tap': 'layer6'}}
  model = random_network_dir(spec)
  image = np.random.default_rng(0).integers(0, 256, (40, 72, 3), np.uint8)
  Image.fromarray(image).save(tmp_path / 'frame.png')
  out = tmp_path / 'out'
  predict._main(predict._parser().parse_args(
      ['--model', model, '--input', str(tmp_path / 'frame.png'), '--out', str(out),
       '--input-size', '40,72']))
  assert sorted(os.listdir(out)) == ['color', 'overlay', 'train_ids']
  ids = _png(out / 'train_ids' / 'frame.png')
  assert ids.max() < 7
  palette = labels.label_set(7).palette
  np.testing.assert_array_equal(_png(out / 'color' / 'frame.png'), palette[ids])
  with pytest.raises(errors.UserError, match='^--outputs label_ids: Cityscapes label ids need a '
                     'network of 19 classes'):
    predict._main(predict._parser().parse_args(
        ['--model', model, '--input', str(tmp_path / 'frame.png'), '--out', str(out),
         '--outputs', 'label_ids']))
