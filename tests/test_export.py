"""`python -m dakd_jax.tools.export`: the exported student, reloaded in a fresh process by the
jax + numpy loader alone, computes the Flax model's logits at any batch and image size."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from dakd_jax import evaluate
from dakd_jax import networks
from dakd_jax.data import transforms
from dakd_jax.tools import export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (batch, H, W): a size the stride divides and one it does not.
SHAPES = ((2, 32, 64), (1, 45, 70))

_SERVE = textwrap.dedent('''
    import sys
    import numpy as np
    import exported
    net = exported.ExportedNetwork(sys.argv[1])
    inputs = np.load(sys.argv[2])
    np.savez(sys.argv[3], **{k: net.logits(inputs[k]) for k in inputs.files})
    # Only jax and numpy: neither the model code nor Flax was imported.
    print(sorted(m for m in sys.modules if m.split('.')[0] in ('dakd_jax', 'flax')))
''')


def _flax_logits(directory, rgb):
  spec, variables = networks.load_network(directory)
  model = networks.create_segmentation_model(spec)
  images = transforms.normalize(rgb, 'caffe')
  return np.asarray(jax.jit(evaluate.main_logits, static_argnums=(0, 3))(
      model, variables, images, rgb.shape[1:3]))


@pytest.mark.slow
def test_exported_student_in_a_fresh_process_matches_the_flax_model(tiny_student_dir, tmp_path):
  path = str(tmp_path / 'student.jaxexport')
  assert export.main(['--model', tiny_student_dir, '--out', path, '--platforms', 'cpu']) == 0
  with open(path + '.json') as f:
    meta = json.load(f)
  assert meta['input']['shape'] == ['b', 'h', 'w', '3'] and meta['input']['dtype'] == 'uint8'
  assert meta['output']['shape'] == ['b', 'h', 'w', '19'] and meta['network']['arch'] == 'drn_d_22'

  rng = np.random.default_rng(0)
  inputs = {f'{b}x{h}x{w}': rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)
            for b, h, w in SHAPES}
  np.savez(tmp_path / 'inputs.npz', **inputs)
  serve_dir = tmp_path / 'serve'  # The loader alone, away from the repository.
  serve_dir.mkdir()
  shutil.copy(os.path.join(REPO, 'dakd_jax', 'tools', 'exported.py'), serve_dir)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # One CPU device.
  run = subprocess.run([sys.executable, '-c', _SERVE, path, str(tmp_path / 'inputs.npz'),
                        str(tmp_path / 'logits.npz')], cwd=serve_dir, env=env,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert run.stdout.strip().splitlines()[-1] == '[]'
  served = np.load(tmp_path / 'logits.npz')
  for name, rgb in inputs.items():
    want = _flax_logits(tiny_student_dir, rgb)
    got = served[name]
    assert got.shape == (*rgb.shape[:3], 19) and got.dtype == np.float32
    assert np.max(np.abs(got - want)) < 1e-5 * np.max(np.abs(want)), name


def test_fixed_size_export_keeps_the_batch_symbolic(tiny_student_dir):
  exported = export.export_network(tiny_student_dir, size=(32, 64), platforms=('cpu',))
  assert [str(d) for d in exported.in_avals[0].shape] == ['b', '32', '64', '3']
  rgb = np.random.default_rng(1).integers(0, 256, (3, 32, 64, 3), dtype=np.uint8)
  got = np.asarray(exported.call(rgb))
  want = _flax_logits(tiny_student_dir, rgb)
  assert np.max(np.abs(got - want)) < 1e-5 * np.max(np.abs(want))
