"""Building networks from their specs and moving their variables in and out of directories.

A network *spec* is `{'arch', 'num_classes', 'options'}` (registry name, classes, constructor
options); a stage's export adds `'trained_by'`: `{'stage', 'method', 'options'}` of the stage that
trained it. A *variables directory* is what `python -m dakd_jax.tools.convert` writes and what
every finished stage exports: an Orbax checkpoint of `{'params', 'batch_stats'}` plus `model.json`
holding the spec, so a teacher or an initialisation can be rebuilt without its config.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp

from dakd_jax import checkpointing
from dakd_jax import errors
from dakd_jax import models

MODEL_FILE = 'model.json'
VARIABLES_SUBDIR = 'variables'
_INIT_SIZE = (64, 64)  # Parameter shapes do not depend on the spatial size.


def create_segmentation_model(spec, compute_dtype='float32', remat=False, bn_groups=1):
  """Instantiates a model from a spec (a stage's network or a `model.json`).

  `compute_dtype`, `remat` and `bn_groups` are run-time choices, not part of the spec: they change
  none of the variables.
  """
  accepted = models.model_options(spec['arch'])  # A translator has neither remat nor BN.
  run_options = {k: v for k, v in (('remat', remat), ('bn_groups', bn_groups)) if k in accepted}
  return models.create_model(spec['arch'], num_classes=spec['num_classes'],
                             dtype=jnp.dtype(compute_dtype), **run_options, **spec['options'])


def init_variables(model, rng, channels=3, sharding=None):
  """Random initial variables, created directly with `sharding` (e.g. replicated).

  Drawn with the non-partitionable threefry: XLA:CPU compiles the partitionable variant 5-8x
  slower for the many small parameter draws of a network (measured: 57 s vs 8 s for a DRN-D-22
  init under load), and replicated initial parameters gain nothing from partitionable draws.
  """
  with jax.threefry_partitionable(False):
    return _jitted_init(model, channels, sharding)(rng)


@functools.cache
def _jitted_init(model, channels, sharding):
  """One compiled initialiser per (module, input channels, sharding): modules are hashable."""
  shape = (1, *_INIT_SIZE, channels)
  return jax.jit(lambda key: model.init(key, jnp.zeros(shape, jnp.float32)),
                 out_shardings=sharding)


def read_model_spec(directory):
  path = os.path.join(directory, MODEL_FILE)
  if not os.path.exists(path):
    raise errors.MissingPathError(
        f'{path}: missing; a variables directory needs the model.json written '
        'by dakd_jax.tools.convert or by a finished stage')
  with open(path) as f:
    return json.load(f)


def save_network(directory, spec, variables):
  """Exports `variables` and `spec` as a variables directory (atomic Orbax write)."""
  os.makedirs(directory, exist_ok=True)
  host = jax.tree.map(jax.device_get, dict(variables))
  checkpointing.save_variables(os.path.join(directory, VARIABLES_SUBDIR), host)
  if jax.process_index() == 0:
    tmp = os.path.join(directory, MODEL_FILE + '.tmp')
    with open(tmp, 'w') as f:
      json.dump(spec, f, indent=2)
    os.replace(tmp, os.path.join(directory, MODEL_FILE))


def load_network(directory, expected_arch=None, reference=None):
  """Reads a variables directory: returns `(spec, variables)`.

  Args:
    directory: written by `save_network` or `dakd_jax.tools.convert`.
    expected_arch: if given, the architecture the caller needs (one-line error otherwise).
    reference: if given, variables of the target model: its collections are read (e.g. a
      spectral-norm discriminator's power-iteration vectors), and shapes must match exactly.
      Without it, the inference collections `params` and `batch_stats` are read.
  """
  spec = read_model_spec(directory)
  if expected_arch is not None and spec['arch'] != expected_arch:
    raise errors.UserError(f'{directory}: holds a {spec["arch"]} but {expected_arch} was expected')
  variables = checkpointing.load_variables(os.path.join(directory, VARIABLES_SUBDIR))
  wanted = tuple(reference) if reference is not None else ('params', 'batch_stats')
  variables = {k: v for k, v in variables.items() if k in wanted}
  if reference is not None:
    got = jax.tree.map(lambda x: tuple(x.shape), variables)
    want = jax.tree.map(lambda x: tuple(x.shape), dict(reference))
    if got != want:
      raise errors.UserError(f'{directory}: variables do not match the configured {spec["arch"]} '
                             f'(options {spec["options"]}); check width/aux_tap/num_classes')
  return spec, variables
