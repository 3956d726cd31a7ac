"""DiGA's self-training pieces as pure functions (method.md §6.2): class centroids of the 256-d
features, their initialisation and EMA update, and the bilateral consensus labels. (The 2-scale
max fusion of the pseudo-labels and the evaluation is `evaluate.main_logits(scales=...)`.)

Shapes: features [N, h, w, D] (stride 8), logits [N, h, w, C] or [N, H, W, C], labels [N, H, W]
int32 with 255 = ignore, centroids [C, D].
"""

import jax
import jax.numpy as jnp

from dakd_jax.models.layers import resize_align_corners

IGNORE_LABEL = 255
MIN_PIXELS = 5  # Classes covering fewer feature pixels of an image give no mean.
MOMENTUM = 1e-4  # Centroid EMA rate in self-training (decay 0.9999).
MEAN_CAP = 3000  # The running-mean count saturates here (official).


def nearest_resize_labels(labels: jax.Array, size) -> jax.Array:
  """torch `F.interpolate(mode='nearest')` of [N, H, W] labels to `size` (h, w): output pixel i
  takes input floor(i * H / h)."""
  rows = [min(int(i * labels.shape[1] / size[0]), labels.shape[1] - 1) for i in range(size[0])]
  cols = [min(int(j * labels.shape[2] / size[1]), labels.shape[2] - 1) for j in range(size[1])]
  return labels[:, jnp.asarray(rows)][:, :, jnp.asarray(cols)]


def class_mean_features(features: jax.Array, logits: jax.Array,
                        labels: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Per image and class, the mean feature over the pixels the network predicts as that class
  (and, with `labels` at the features' size, that are labelled so), as `calculate_mean_vector`.

  Returns:
    (means [N, C, D], valid [N, C]): valid where the class covers >= MIN_PIXELS pixels.
  """
  num_classes = logits.shape[-1]
  mask = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes, dtype=jnp.float32)
  if labels is not None:  # 255 (or anything outside [0, C)) one-hot encodes to zeros.
    mask = mask * jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  counts = jnp.sum(mask, axis=(1, 2))  # [N, C]
  sums = jnp.einsum('nhwc,nhwd->ncd', mask, features.astype(jnp.float32))
  means = sums / jnp.maximum(counts, 1.0)[..., None]
  return means, counts >= MIN_PIXELS


def update_centroids(centroids: jax.Array, counts: jax.Array, means: jax.Array,
                     valid: jax.Array, momentum: float = MOMENTUM,
                     mean_below: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """`update_objective_SingleVector`, image after image, for every valid class whose mean is not
  all zero: a class seen fewer than `mean_below` times takes the running mean
  rho_k <- (rho_k n_k + m_nk) / (n_k + 1), otherwise the moving average
  rho_k <- (1 - momentum) rho_k + momentum m_nk; then n_k <- min(n_k + 1, MEAN_CAP).

  `mean_below`: inf for `calc_centroids.py`'s initialisation (plain running means), 100 for the
  official `start_mean=True`, 0 for self-training's `start_mean=False` (pure moving average).

  Args:
    centroids: [C, D]; counts: [C] float; means: [N, C, D]; valid: [N, C] bool.

  Returns:
    (centroids, counts) after the N images.
  """
  def one_image(carry, image):
    rho, n = carry
    m, ok = image
    ok = ok & (jnp.sum(m, axis=-1) != 0)
    running = (rho * n[:, None] + m) / (n[:, None] + 1)
    moving = (1 - momentum) * rho + momentum * m
    new = jnp.where((n < mean_below)[:, None], running, moving)
    return (jnp.where(ok[:, None], new, rho), jnp.where(ok, jnp.minimum(n + 1, MEAN_CAP), n)), None
  return jax.lax.scan(one_image, (centroids, counts), (means, valid))[0]


def centroid_labels(features: jax.Array, centroids: jax.Array, size) -> jax.Array:
  """ŷ_feat [N, H, W]: argmax over classes of softmax(-||f - rho_k||) upsampled (align corners)
  from the features' size to `size` (H, W)."""
  # Direct differences (not |f|^2 - 2 f.rho + |rho|^2): no cancellation near ties.
  distance = jnp.linalg.norm(features.astype(jnp.float32)[..., None, :] - centroids, axis=-1)
  weights = resize_align_corners(jax.nn.softmax(-distance, axis=-1), size)
  return jnp.argmax(weights, axis=-1).astype(jnp.int32)


def consensus_labels(offline: jax.Array, feature_labels: jax.Array) -> jax.Array:
  """Bilateral consensus: the offline pseudo-label where the centroid label agrees, else 255."""
  return jnp.where(offline == feature_labels, offline, IGNORE_LABEL).astype(jnp.int32)
