"""Test set-up: eight simulated CPU devices (set before JAX is imported anywhere), the `torch`
mark, and the tiny configuration of `configs/tiny.py` on a small synthetic domain pair.

Tiers: `python -m pytest -m "not slow"` is the quick loop; `slow` tests train end to end or
compile whole training steps. Tests marked `torch` (or taking the `torch` fixture, which marks
them) need the optional PyTorch extra and are skipped without it; every other test runs without
torch installed.
"""

import importlib.util
import os
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

# Identical programs (the same step compiled by several tests, or by a run and its resumption)
# compile once per session: XLA:CPU compilation dominates these tests' time.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="dakd_xla_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests' programs are tiny and compiled once each: XLA's optimisation passes cost more time
# than they save (measured: the end-to-end pipeline test 121 s -> 93 s). Results are compared
# with tolerances or against runs made under the same flag.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import pytest  # pylint: disable=g-import-not-at-top  (after the environment)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # `configs` is a top-level package of the repository.
  sys.path.insert(0, REPO)
HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  del config
  skip = pytest.mark.skip(reason="needs the optional PyTorch extra (pip install torch==2.13.0)")
  for item in items:
    if "torch" in getattr(item, "fixturenames", ()):
      item.add_marker(pytest.mark.torch)
    if not HAS_TORCH and item.get_closest_marker("torch"):
      item.add_marker(skip)


@pytest.fixture
def xla_optimised():
  """XLA's optimisation passes on for one test (the suite turns most of them off, above)."""
  import jax  # pylint: disable=g-import-not-at-top
  disabled = os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "1"
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", disabled)


@pytest.fixture
def torch():
  """The torch module; a test taking it is marked `torch`."""
  import torch as torch_module  # pylint: disable=g-import-not-at-top
  return torch_module


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
  """The synthetic pair at the tiny config's counts and size (generated once per session)."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from dakd_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  s = tiny.get_config().synthetic
  out = tmp_path_factory.mktemp("synthetic")
  synthetic.generate(out, seed=s.seed, size=tuple(s.size), num_source=s.num_source,
                     num_target_train=s.num_target_train, num_target_val=s.num_target_val)
  return str(out)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  """One prepared TFDS copy of the synthetic pair shared by the session's runs."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def tiny_config(synthetic_root, tfds_dir):
  """`make(**overrides)`: configs/tiny.py on the session's synthetic pair.

  Overrides are dotted keys, e.g. `make(pipeline=('teacher',),
  **{'stages.student.num_steps': 6})`.
  """
  from configs import tiny  # pylint: disable=g-import-not-at-top

  def make(**overrides):
    config = tiny.get_config()
    config.roots.gta5 = os.path.join(synthetic_root, "gta5")
    config.roots.cityscapes = os.path.join(synthetic_root, "cityscapes")
    config.data_dir = tfds_dir
    config.update_from_flattened_dict(overrides)
    return config

  return make


TINY_STUDENT = {"arch": "drn_d_22", "num_classes": 19,
                "options": {"width": 1 / 16, "aux_tap": "layer6"}}


@pytest.fixture(scope="session")
def random_network_dir(tmp_path_factory):
  """`make(spec)`: a variables directory of the DRN of `spec` (like `TINY_STUDENT`).

  Drawn in NumPy from DRN's initial distribution (conv kernels N(0, 2 / (k * k * C_out)), BN
  statistics of a unit normal), which skips compiling the initialiser; its predictions already
  hold several classes per image.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dakd_jax import models, networks  # pylint: disable=g-import-not-at-top

  def make(spec):
    rng = np.random.default_rng(0)

    def draw(path, leaf):
      name = path[-1].key
      if name == "kernel":
        k_h, k_w, _, c_out = leaf.shape
        return rng.normal(0.0, np.sqrt(2.0 / (k_h * k_w * c_out)), leaf.shape).astype(np.float32)
      return np.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, np.float32)

    shapes = models.abstract_variables(spec["arch"], spec["num_classes"], **spec["options"])
    directory = str(tmp_path_factory.mktemp(f"{spec['arch']}_{spec['num_classes']}"))
    networks.save_network(directory, spec, jax.tree_util.tree_map_with_path(draw, shapes))
    return directory

  return make


@pytest.fixture(scope="session")
def tiny_student_dir(random_network_dir):
  """A variables directory of the tiny config's DRN-D-22 student (spec `TINY_STUDENT`)."""
  return random_network_dir(TINY_STUDENT)


@pytest.fixture
def killed_run(monkeypatch):
  """`run(config, workdir, step, occurrence=1)`: `experiment.run(config, workdir)` killed with a
  KeyboardInterrupt the `occurrence`-th time a training loop of that run reaches `step` (at the
  step's trace annotation: `step - 1` steps done); asserts that it was killed."""
  import jax  # pylint: disable=g-import-not-at-top
  from dakd_jax import experiment  # pylint: disable=g-import-not-at-top
  real_annotation = jax.profiler.StepTraceAnnotation

  def run(config, workdir, step, occurrence=1):
    seen = []

    def annotation(name, step_num):
      if step_num == step:
        seen.append(step_num)
        if len(seen) == occurrence:
          raise KeyboardInterrupt("simulated kill")
      return real_annotation(name, step_num=step_num)

    monkeypatch.setattr(jax.profiler, "StepTraceAnnotation", annotation)
    try:
      with pytest.raises(KeyboardInterrupt):
        experiment.run(config, workdir)
    finally:
      monkeypatch.setattr(jax.profiler, "StepTraceAnnotation", real_annotation)

  return run
