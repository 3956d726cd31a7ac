"""The passes a method asks for before its stage's first step (`dakd_jax.offline`): offline
pseudo-labels read by the target stream in place of its labels, and the method-state passes
(DiGA's centroid initialisation), on the synthetic pair in its real folder format."""

import io
import os
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from dakd_jax import errors
from dakd_jax import evaluate
from dakd_jax import methods
from dakd_jax import networks as networks_lib
from dakd_jax import offline
from dakd_jax.data import labels as labels_lib
from dakd_jax.data import pipeline
from dakd_jax.data import transforms


def _target_stream(synthetic_root, **kwargs):
  return pipeline.Stream(dataset='cityscapes', root=os.path.join(synthetic_root, 'cityscapes'),
                         **kwargs)


def _full_resolution_split(stream, data_dir):
  """(name, normalised image, train-id label) of every image of the stream's split, in order."""
  split = pipeline.EvalSet(dataset=stream.dataset, root=stream.root, split=stream.split,
                           normalization=stream.normalization)
  return [(str(n.decode() if isinstance(n, bytes) else n), b['image'][i], b['label'][i])
          for b in pipeline.make_eval_dataset(split, batch_size=1, data_dir=data_dir)
          for i, n in enumerate(b['name'])]


def test_class_id_labels_keep_the_label_sets_ids():
  lut = labels_lib.label_lut(labels_lib.CLASS_ID, 16)
  np.testing.assert_array_equal(lut[:16], np.arange(16))
  assert np.all(lut[16:] == 255)


def test_pseudo_label_files_are_checked(tmp_path):
  image = io.BytesIO()
  Image.new('RGB', (8, 4)).save(image, format='PNG')
  label = io.BytesIO()
  Image.new('L', (8, 4), 7).save(label, format='PNG')
  record = {'image': image.getvalue(), 'label': label.getvalue(), 'name': b'a',
            'image_file': b'a_image.png', 'label_file': b'a_label.png'}
  decode = transforms.Decode(pseudo_labels=str(tmp_path))
  Image.fromarray(np.full((4, 8), 3, np.uint8)).save(tmp_path / 'a.png')
  assert np.all(np.asarray(decode.map(record)['label']) == 3)
  assert np.all(np.asarray(transforms.Decode().map(record)['label']) == 7)
  with pytest.raises(errors.UserError, match=r'b\.png: no pseudo-label for image b'):
    decode.map({**record, 'name': b'b'})
  Image.fromarray(np.zeros((4, 7), np.uint8)).save(tmp_path / 'a.png')
  with pytest.raises(errors.UserError, match=r'a\.png is a 7x4 L image; expected .* 8x4'):
    decode.map(record)


def test_pseudo_labels_follow_their_images_through_rescale_crop_and_flip(synthetic_root,
                                                                         tfds_dir, tmp_path):
  """Pseudo-labels that are a permutation of the true labels come out of the augmented stream as
  that permutation of the stream's own labels, batch after batch."""
  perm = np.full(256, 255, np.uint8)
  perm[:19] = np.random.default_rng(0).permutation(19)
  augment = pipeline.Augment(random_scale=(0.7, 1.0), per_axis_scale=True, crop=(24, 40),
                             flip=True)
  stream = _target_stream(synthetic_root, size=(48, 96), augment=augment)
  for name, _, label in _full_resolution_split(stream, tfds_dir):
    Image.fromarray(perm[label]).save(tmp_path / f'{name}.png')
  read = lambda s: [b['label'] for b, _ in zip(
      pipeline.make_train_dataset(s, global_batch_size=4, seed=3, data_dir=tfds_dir), range(4))]
  own = read(stream)
  pseudo = read(pipeline.Stream(**{**vars(stream), 'pseudo_labels': str(tmp_path)}))
  for a, b in zip(own, pseudo):
    np.testing.assert_array_equal(b, perm[a])
  assert any(np.any(a != b) for a, b in zip(own, pseudo))


def _stage(method, stream, frozen_networks=None):
  return types.SimpleNamespace(name='st', method=method, target=stream, batch_size=8,
                               frozen_networks=frozen_networks or {})


@pytest.mark.slow
def test_pseudo_labels_are_the_labelers_two_scale_prediction_at_full_resolution(
    synthetic_root, tfds_dir, tmp_path, tiny_student_dir):
  spec, variables = networks_lib.load_network(tiny_student_dir)
  method = methods.create('diga_selftrain', {'translation': 'colour_stats'})
  assert method.pseudo_labeler == 'labeler' and method.pseudo_label_scales == (1.0, 0.5)
  stream = _target_stream(synthetic_root, size=(32, 64))  # The stream's size plays no part.
  stage = _stage(method, stream, {'labeler': spec})
  run = types.SimpleNamespace(data_dir=tfds_dir, frozen_dtype='', compute_dtype='float32')
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
  out = offline.write_pseudo_labels(stage, run, str(tmp_path), variables, mesh)
  assert out == str(tmp_path / offline.PSEUDO_LABELS_SUBDIR)
  assert not os.path.exists(out + '.partial')
  model = networks_lib.create_segmentation_model(spec, 'float32')
  split = _full_resolution_split(stream, tfds_dir)
  assert sorted(os.listdir(out)) == sorted(f'{name}.png' for name, _, _ in split)
  classes = set()
  for name, image, label in split:
    expected = evaluate.predict_classes(model, variables, image[None], label.shape, (1.0, 0.5))[0]
    written = np.asarray(Image.open(os.path.join(out, f'{name}.png')))
    np.testing.assert_array_equal(written, expected)
    classes |= set(np.unique(written).tolist())
  assert len(classes) > 1
  # A complete directory is kept as it is (a resumed stage reads the same labels).
  os.remove(os.path.join(out, f'{split[0][0]}.png'))
  assert offline.write_pseudo_labels(stage, run, str(tmp_path), variables, mesh) == out
  assert len(os.listdir(out)) == len(split) - 1


class _FeatureNet(nn.Module):
  """Logits and features from two 1x1 convolutions (the method needs `return_features`)."""
  num_classes: int = 4
  return_features: bool = False

  @nn.compact
  def __call__(self, x, train=False):
    del train
    features = nn.Conv(5, (1, 1), name='feat')(x / 50.0)
    out = {'main': nn.Conv(self.num_classes, (1, 1), name='cls')(features)}
    return {**out, 'features': features} if self.return_features else out


def _calc_centroids(features, logits, passes, num_classes):
  """`calc_centroids.py` in float64 NumPy: per image and predicted class (>= 5 pixels) the mean
  feature, folded into running means whose count stops at 3000."""
  rho, n = np.zeros((num_classes, features.shape[-1])), np.zeros(num_classes)
  for _ in range(passes):
    for f, l in zip(features, logits):
      predicted = l.argmax(-1)
      for k in range(num_classes):
        pixels = predicted == k
        if pixels.sum() < 5:
          continue
        mean = f[pixels].mean(0)
        if mean.sum() == 0:
          continue
        rho[k] = (rho[k] * n[k] + mean) / (n[k] + 1)
        n[k] = min(n[k] + 1, 3000)
  return rho, n


def test_centroid_passes_are_calc_centroids_running_means(synthetic_root, tfds_dir):
  method = methods.create('diga_selftrain', {'translation': 'colour_stats',
                                             'centroid_passes': 2})
  assert method.state_passes == 2
  network = _FeatureNet()
  stream = _target_stream(synthetic_root, size=(16, 32), normalization='diga')
  small = np.stack([np.asarray(b) for batch in pipeline.make_eval_dataset(
      pipeline.EvalSet(dataset='cityscapes', root=stream.root, split='train', input_size=(16, 32),
                       normalization='diga'), batch_size=5, data_dir=tfds_dir)
                    for b in batch['image']])
  assert small.shape == (12, 16, 32, 3)  # The synthetic target's training split, in order.
  variables = network.init(jax.random.PRNGKey(0), small[:1])
  state = {'centroids': jnp.zeros((4, 5)), 'centroid_counts': jnp.zeros((4,)), 'other': 1}
  got = offline.initial_method_state(_stage(method, stream), types.SimpleNamespace(
      data_dir=tfds_dir), state, network, variables)
  outputs = network.clone(return_features=True).apply(variables, small)
  rho, n = _calc_centroids(np.asarray(outputs['features'], np.float64),
                           np.asarray(outputs['main']), 2, 4)
  assert got['other'] == 1 and np.sum(n > 0) >= 2
  np.testing.assert_array_equal(got['centroid_counts'], n)
  np.testing.assert_allclose(got['centroids'], rho, rtol=1e-5, atol=1e-6)
