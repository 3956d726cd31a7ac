"""Continual results: sequences followed through `init`, forgetting, the per-domain table, and
a stage evaluated on several domains."""

import json

import jax
import numpy as np
import pytest

from dakd_jax import continual
from dakd_jax import experiment
from dakd_jax import models
from dakd_jax import networks
from dakd_jax.data import labels


def _record(stage, target, init, miou):
  return {'stage': stage, 'row': stage, 'target': target, 'init': init,
          'export': f'/w/{stage}/export', 'miou_by_dataset': miou}


RECORDS = [
    _record('advent_cs', 'cityscapes', '/weights/init', {'cityscapes': 60.0, 'idd': 40.0,
                                                         'mapillary': 45.0}),
    _record('baseline_idd', 'idd', '/w/advent_cs/export', {'cityscapes': 50.0, 'idd': 52.0,
                                                           'mapillary': 47.0}),
    _record('baseline_map', 'mapillary', '/w/baseline_idd/export',
            {'cityscapes': 47.0, 'idd': 46.0, 'mapillary': 55.0}),
    _record('muhdi_idd', 'idd', '/w/advent_cs/export', {'cityscapes': 58.0, 'idd': 51.0,
                                                        'mapillary': 48.0}),
]


def test_chain_follows_init_to_the_first_step():
  assert [r['stage'] for r in continual.chain(RECORDS[2], RECORDS)] == [
      'advent_cs', 'baseline_idd', 'baseline_map']
  assert [r['stage'] for r in continual.chain(RECORDS[3], RECORDS)] == ['advent_cs', 'muhdi_idd']


def test_chain_survives_a_moved_workdir():
  """A completed stage's record keeps the paths of the workdir it ran in; the next stage, run
  after the workdir was copied, names its init under the new one: still one sequence."""
  first = _record('advent_cs', 'cityscapes', None, {'cityscapes': 45.0})
  moved = dict(_record('muhdi_idd', 'idd', '/copy/advent_cs/export', {'cityscapes': 44.0}),
               export='/copy/muhdi_idd/export')
  assert [r['stage'] for r in continual.chain(moved, [first, moved])] == ['advent_cs', 'muhdi_idd']
  assert continual.forgetting(moved, [first, moved]) == {'cityscapes': 1.0}


def test_forgetting_is_the_drop_on_each_earlier_target():
  assert continual.forgetting(RECORDS[0], RECORDS) == {}
  assert continual.forgetting(RECORDS[1], RECORDS) == {'cityscapes': 10.0}
  assert continual.forgetting(RECORDS[2], RECORDS) == {'cityscapes': 13.0, 'idd': 6.0}
  assert continual.forgetting(RECORDS[3], RECORDS) == {'cityscapes': 2.0}


def test_table_rows_and_mean_forgetting():
  lines = continual.format_table(RECORDS, ('cityscapes', 'idd', 'mapillary')).splitlines()
  assert lines[0].split() == ['step', 'target', 'cityscapes', 'idd', 'mapillary', 'forgetting']
  assert lines[2].split() == ['advent_cs', 'cityscapes', '60.00', '40.00', '45.00', '-']
  assert lines[4].split() == ['baseline_map', 'mapillary', '47.00', '46.00', '55.00', '9.50']
  # A record from before eval.also existed has no per-domain mIoUs: dashes, no error.
  old = {'stage': 'old', 'row': 'old', 'export': '/w/old/export'}
  assert continual.format_table([old], ('cityscapes',)).splitlines()[2].split() == [
      'old', '-', '-', '-']


@pytest.mark.slow  # Generates data and evaluates a tiny network on two domains.
def test_stage_evaluated_on_every_domain_at_7_classes(tmp_path, tiny_config):
  """A given (trained) tiny 7-class network on the synthetic pair plus its BDD-like second
  target, evaluated on both (eval.also): per-domain mIoUs in the record, 7 class IoUs, the
  continual table written."""
  spec = {'arch': 'drn_d_22', 'num_classes': 7, 'options': {'width': 1 / 16, 'aux_tap': 'layer6'}}
  rng = np.random.default_rng(0)
  shapes = models.abstract_variables(spec['arch'], 7, **spec['options'])
  networks.save_network(str(tmp_path / 'net'), spec, jax.tree.map(
      lambda leaf: rng.normal(0.0, 0.3, leaf.shape).astype(np.float32) + (
          1.0 if leaf.ndim == 1 else 0.0), shapes))
  config = tiny_config(**{'num_classes': 7, 'eval.also': ('bdd100k',), 'eval.num_images': 2,
                          'synthetic.enabled': True, 'synthetic.bdd': True,
                          'synthetic.out': str(tmp_path / 'synthetic'),
                          'synthetic.num_bdd_train': 2, 'synthetic.num_bdd_val': 2,
                          'stages.student.trained': str(tmp_path / 'net')})
  config.roots.cityscapes = config.roots.gta5 = ''  # The generated folders.
  config.data_dir = str(tmp_path / 'tfds')
  results = experiment.run(config, str(tmp_path / 'run'))
  record = json.loads((tmp_path / 'run' / 'student' / 'stage.json').read_text())
  assert set(record['miou_by_dataset']) == {'cityscapes', 'bdd100k'}
  assert set(results['student']['per_class_iou']) == set(labels.SUPER_CLASS_NAMES)
  table = (tmp_path / 'run' / experiment.CONTINUAL_TABLE).read_text().splitlines()
  assert table[0].split() == ['step', 'target', 'cityscapes', 'bdd100k', 'forgetting']
