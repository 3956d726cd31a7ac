"""DiGA's self-training pieces against the official-style PyTorch centroid bank: class means,
running-mean initialisation, EMA update, centroid labels and consensus; 2-scale max fusion."""

import jax
import jax.numpy as jnp
import numpy as np

from dakd_jax import centroids as C

K, D = 4, 6


def _inputs(seed, n=3, h=12, w=14):
  rng = np.random.default_rng(seed)
  features = rng.normal(0, 1, (n, h, w, D)).astype(np.float32)
  logits = rng.normal(0, 1, (n, h, w, K)).astype(np.float32)
  labels = rng.integers(0, K, (n, h, w)).astype(np.int32)
  labels[:, :, 0] = 255
  return features, logits, labels


def _nchw(x):
  return np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))


def test_class_means_and_both_updates_match_the_reference(torch):
  from dakd_jax.torch_ref import diga as R  # pylint: disable=g-import-not-at-top
  features, logits, labels = _inputs(0)
  for with_labels in (False, True):
    means, valid = C.class_mean_features(features, logits, labels if with_labels else None)
    bank = R.ClassFeatures(K, D)
    ref = bank.mean_vectors(torch.tensor(_nchw(features), dtype=torch.float64),
                            torch.tensor(_nchw(logits)),
                            torch.tensor(labels) if with_labels else None)
    got = [(int(k), np.asarray(means[n, k])) for n, k in zip(*np.nonzero(np.asarray(valid)))]
    assert len(got) >= 3 and [k for k, _ in got] == [k for k, _ in ref]  # Same order: n, then k.
    for (_, a), (_, b) in zip(got, ref):
      np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)

  means, valid = C.class_mean_features(features, logits, labels)
  ref_items = R.ClassFeatures(K, D).mean_vectors(
      torch.tensor(_nchw(features), dtype=torch.float64), torch.tensor(_nchw(logits)),
      torch.tensor(labels))
  start = np.random.default_rng(1).normal(0, 1, (K, D))
  counts0 = [0.0, 99.0, 2999.0, 5.0]
  for mode, start_mean, mean_below in (('moving_average', False, 0.0),
                                       ('mean', False, float('inf')),
                                       ('moving_average', True, 100.0)):
    bank = R.ClassFeatures(K, D, momentum=0.1)
    bank.vectors[:] = torch.tensor(start)
    bank.counts[:] = torch.tensor(counts0)
    for k, v in ref_items:
      bank.update(k, v, mode, start_mean)
    got, counts = C.update_centroids(jnp.asarray(start, jnp.float32), jnp.asarray(counts0),
                                     means, valid, momentum=0.1, mean_below=mean_below)
    np.testing.assert_array_equal(counts, bank.counts.numpy())
    np.testing.assert_allclose(got, bank.vectors.numpy(), rtol=1e-5, atol=1e-6)


def test_centroid_labels_and_consensus_match_the_reference(torch):
  from dakd_jax.torch_ref import diga as R  # pylint: disable=g-import-not-at-top
  features, _, _ = _inputs(2, n=2, h=5, w=6)
  bank = R.ClassFeatures(K, D)
  bank.vectors[:] = torch.tensor(np.random.default_rng(3).normal(0, 1, (K, D)))
  weights = bank.centroid_weight(torch.tensor(_nchw(features), dtype=torch.float64))
  up = torch.nn.functional.interpolate(weights, size=(17, 21), mode='bilinear',
                                       align_corners=True)
  expected = up.argmax(1).numpy()
  got = C.centroid_labels(features, jnp.asarray(bank.vectors.numpy(), jnp.float32), (17, 21))
  np.testing.assert_array_equal(got, expected)
  offline = np.where(np.random.default_rng(4).random(expected.shape) < 0.5, expected,
                     (expected + 1) % K).astype(np.int32)
  consensus = C.consensus_labels(offline, got)
  np.testing.assert_array_equal(consensus, np.where(offline == expected, offline, 255))


def test_nearest_label_resize_and_two_scale_fusion_match_torch(torch):
  labels = np.random.default_rng(5).integers(0, 19, (2, 64, 112)).astype(np.int32)
  ref = torch.nn.functional.interpolate(torch.tensor(labels[:, None]).float(), size=(9, 15),
                                        mode='nearest')[:, 0].long().numpy()
  np.testing.assert_array_equal(C.nearest_resize_labels(jnp.asarray(labels), (9, 15)), ref)
  # 2-scale max fusion (DiGA's pseudo-labels and evaluation) against torch.
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from dakd_jax import evaluate  # pylint: disable=g-import-not-at-top

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return {'main': nn.Conv(3, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))(x)}

  net = Net()
  images = np.random.default_rng(6).normal(0, 1, (1, 9, 15, 3)).astype(np.float32)
  variables = net.init(jax.random.PRNGKey(0), images)
  conv = torch.nn.Conv2d(3, 3, 3, 2, 1)
  with torch.no_grad():
    conv.weight.copy_(torch.tensor(np.asarray(variables['params']['Conv_0']['kernel'])
                                   .transpose(3, 2, 0, 1)))
    conv.bias.copy_(torch.tensor(np.asarray(variables['params']['Conv_0']['bias'])))
    x = torch.tensor(_nchw(images))
    half = torch.nn.functional.interpolate(x, size=(5, 8), mode='bilinear', align_corners=True)
    up = lambda y: torch.nn.functional.interpolate(y, size=(65, 113), mode='bilinear',
                                                   align_corners=True)
    expected = torch.maximum(up(conv(x)), up(conv(half))).numpy().transpose(0, 2, 3, 1)
  fused = jax.jit(evaluate.main_logits, static_argnums=(0, 3, 4))(
      net, variables, images, (65, 113), (1.0, 0.5))
  np.testing.assert_allclose(fused, expected, atol=1e-5)
