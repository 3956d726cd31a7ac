"""The notebooks of notebooks/: committed without outputs, and executed end to end on the CPU
(nbclient, a fresh kernel of this Python) with the tiny configuration, as a Colab user runs them.

Parameters are injected the papermill way: a cell after the one tagged `parameters` overrides its
values. A last cell prints what the run produced as JSON, which the tests read back.
"""

import glob
import json
import os

import nbclient
import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, 'notebooks')
NAMES = sorted(f for f in os.listdir(NOTEBOOKS) if f.endswith('.ipynb'))
TIMEOUT_S = 900  # Per cell; a tiny stage compiles in about a minute on a loaded 2-core CPU.


def read(name):
  return nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)


def code_cells(notebook):
  return [c for c in notebook.cells if c.cell_type == 'code']


def execute(name, parameters, report_expression, monkeypatch):
  """Runs notebook `name` with `parameters`; returns (the executed notebook, the report)."""
  notebook = read(name)
  index = next(i for i, c in enumerate(notebook.cells)
               if 'parameters' in c.metadata.get('tags', ()))
  notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(
      '\n'.join(f'{key} = {value!r}' for key, value in parameters.items()),
      metadata={'tags': ['injected-parameters']}))
  notebook.cells.append(nbformat.v4.new_code_cell(
      f'import json\nprint(json.dumps({report_expression}))'))
  # The kernel inherits the tests' environment (CPU devices, compilation cache) and this checkout.
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [
      REPO, os.environ.get('PYTHONPATH')])))
  nbclient.NotebookClient(notebook, timeout=TIMEOUT_S, kernel_name='python3',
                          resources={'metadata': {'path': NOTEBOOKS}}).execute()
  report = json.loads(notebook.cells[-1].outputs[-1]['text'])
  return notebook, report


def output_types(notebook):
  return [kind for c in code_cells(notebook) for out in c.outputs
          for kind in out.get('data', {})]


def printed(notebook):
  return ''.join(out.get('text', '') for c in code_cells(notebook) for out in c.outputs)


def test_there_are_the_two_notebooks():
  assert NAMES == ['compare_jax_pytorch.ipynb', 'quickstart.ipynb']


@pytest.mark.parametrize('name', NAMES)
def test_committed_notebook_is_valid_without_outputs_and_has_one_parameters_cell(name):
  notebook = read(name)
  nbformat.validate(notebook)
  cells = code_cells(notebook)
  assert all(not c.outputs and c.execution_count is None for c in cells), (
      f'{name}: strip the outputs before committing')
  assert sum('parameters' in c.metadata.get('tags', ()) for c in cells) == 1


def test_notebooks_share_one_set_up_cell():
  assert len({code_cells(read(name))[0].source for name in NAMES}) == 1


@pytest.mark.slow
@pytest.mark.notebook
def test_quickstart_runs_the_tiny_pipeline(tmp_path, monkeypatch):
  workdir = str(tmp_path / 'run')
  notebook, report = execute('quickstart.ipynb', {
      'CONFIG': 'configs/tiny.py', 'OVERRIDES': {'synthetic.enabled': True},
      'WORKDIR': workdir, 'SHOW_TENSORBOARD': False,
  }, "{'results': results, 'compute_dtype': config.compute_dtype}", monkeypatch)
  assert report['compute_dtype'] == 'float32'  # The CPU's.
  assert list(report['results']) == ['student']
  assert 0 < report['results']['student']['miou'] <= 100
  for name in ('results.md', 'grid.png'):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert glob.glob(os.path.join(workdir, 'student', 'events.out.tfevents.*'))  # TensorBoard's.
  text = printed(notebook)
  assert 'Running on 8 x cpu (cpu)' in text  # The tests' eight simulated devices.
  assert 'TensorBoard skipped' in text
  assert 'S: DRN-D-22 (DA)' in text  # The results table.
  assert '--config.roots.gta5=/content/drive/MyDrive/data/GTA5' in text
  assert 'image/png' in output_types(notebook)  # The grid, inline.


@pytest.mark.slow
@pytest.mark.notebook
def test_compare_notebook_shows_parity_and_speed(monkeypatch):
  notebook, report = execute('compare_jax_pytorch.ipynb', {
      'CONFIG': 'configs/tiny.py', 'PARITY_STEPS': 3, 'WARMUP': 1, 'ITERS': 2,
      'OVERRIDES': {'stages.distill_c.num_steps': 10},
  }, "{'loss': report.max_loss_difference(), 'images_per_s': "
     "[t.images_per_s for t in [jax_timing, *torch_timings]]}", monkeypatch)
  assert report['loss'] < 1e-4  # tests/test_compare.py's float32 parity.
  assert len(report['images_per_s']) == 2 and all(v > 0 for v in report['images_per_s'])
  text = printed(notebook)
  assert 'PyTorch' in text and 'on cpu' in text
  assert 'JAX speed-up vs PyTorch fp32 eager' in text
  assert output_types(notebook).count('image/png') == 2  # Per-step losses and the speed chart.
