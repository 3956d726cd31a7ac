"""`python -m dakd_jax.tools.profile_model`: the teacher-vs-student figures of a config."""

import json
import os

import jax
import pytest

from dakd_jax import models
from dakd_jax.tools import profile_model

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
                    'tiny.py')


@pytest.mark.slow
def test_teacher_and_student_figures_of_the_tiny_config(capsys):
  assert profile_model.main(['--config', TINY, '--batch', '2', '--warmup', '0',
                             '--iters', '1']) == 0
  out = capsys.readouterr().out.strip().splitlines()
  rows = {r['name']: r for r in json.loads(out[-1])}
  assert sorted(rows) == ['student', 'teacher']
  assert out[0].startswith('32x64 images, float32, on ')  # The tiny config's eval.input_size.
  assert sum(line.startswith('| student (drn_d_22 x0.0625) |') for line in out) == 1
  for r in rows.values():
    shapes = models.abstract_variables(r['arch'], 19, **r['options'])
    assert r['params'] == models.count_params(shapes)
    assert r['weight_bytes'] == 4 * sum(x.size for x in jax.tree.leaves(shapes))
    assert r['gflops'] > 0 and r['activation_bytes'] > 0
    assert r['latency_ms'] > 0 and r['images_per_s'] > 0 and r['size'] == [32, 64]
  # The deeper DRN-D-38 teacher is larger and costs more per image than the DRN-D-22 student.
  assert rows['teacher']['params'] > rows['student']['params']
  assert rows['teacher']['gflops'] > rows['student']['gflops']


def test_unknown_network_is_a_one_line_error(capsys):
  assert profile_model.main(['--config', TINY, '--networks', 'student,tutor']) == 2
  assert capsys.readouterr().err.splitlines() == [
      "python -m dakd_jax.tools.profile_model: error: --networks student,tutor: ['tutor'] not "
      'in config.networks (student, teacher)']
