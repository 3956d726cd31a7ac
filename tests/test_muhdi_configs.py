"""MuHDi's sequence configs as stage plans: the official steps, inputs chained step to step,
7 classes at 640x320, evaluation on every target (no training here)."""

from configs import muhdi_gta2cs2idd2mapillary
from configs import muhdi_synthetic
from dakd_jax import stages as stages_lib


def _plan(config, tmp_path):
  return {s.name: s for s in stages_lib.plan(config, str(tmp_path))}


def test_real_sequence_steps_and_inputs(tmp_path):
  config = muhdi_gta2cs2idd2mapillary.get_config()
  plan = _plan(config, tmp_path)
  export = lambda name: stages_lib.export_dir(str(tmp_path), name)
  assert list(plan) == ['advent_cs', 'baseline_idd', 'baseline_mapillary', 'muhdi_idd',
                        'muhdi_mapillary']
  # (method, network, target, stop, horizon, init from, previous model) per official config.
  expected = {
      'advent_cs': ('advent', 'deeplabv2_r101', 'cityscapes', 120_000, 240_000, None, None),
      'baseline_idd': ('advent', 'deeplabv2_r101', 'idd', 120_000, 240_000, 'advent_cs', None),
      'baseline_mapillary': ('advent', 'deeplabv2_r101', 'mapillary', 120_000, 240_000,
                             'baseline_idd', None),
      'muhdi_idd': ('muhdi', 'muhdi_deeplabv2_r101', 'idd', 60_000, 120_000, 'advent_cs',
                    ('advent_cs', 'deeplabv2_r101')),
      'muhdi_mapillary': ('muhdi', 'muhdi_deeplabv2_r101', 'mapillary', 60_000, 120_000,
                          'muhdi_idd', ('muhdi_idd', 'muhdi_deeplabv2_r101')),
  }
  for name, (method, arch, target, stop, horizon, init, previous) in expected.items():
    s = plan[name]
    assert (s.method.name, s.network['arch'], s.target.dataset) == (method, arch, target)
    assert (s.num_steps, s.schedule_steps, s.network['num_classes']) == (stop, horizon, 7)
    assert s.source.dataset == 'gta5' and s.source.size == s.target.size == (320, 640)
    assert s.source.num_classes == s.target.num_classes == 7
    assert s.optim.head_lr_mult == 10.0 and s.batch_size == 1
    assert s.init == (export(init) if init else '')
    assert s.players == (stages_lib.players_dir(str(tmp_path), init) if init else '')
    if previous:
      assert s.frozen == {'previous': export(previous[0])}
      assert s.frozen_networks['previous']['arch'] == previous[1]
    else:
      assert not s.frozen
  assert (config.eval.dataset, *config.eval.also) == ('cityscapes', 'idd', 'mapillary')
  assert tuple(config.eval.input_size) == tuple(config.eval.label_size) == (320, 640)


def test_synthetic_sequence_has_two_targets(tmp_path):
  config = muhdi_synthetic.get_config()
  plan = _plan(config, tmp_path)
  assert [(s.name, s.target.dataset) for s in plan.values()] == [
      ('advent_cs', 'cityscapes'), ('baseline_bdd', 'bdd100k'), ('muhdi_bdd', 'bdd100k')]
  assert plan['muhdi_bdd'].frozen == {'previous': stages_lib.export_dir(str(tmp_path),
                                                                       'advent_cs')}
  assert config.synthetic.bdd and tuple(config.eval.also) == ('bdd100k',)
