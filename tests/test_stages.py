"""Stages as data: the shipped configs against the official scripts, the stage table, inputs
resolved across stages and directories, and one-line errors naming the config key."""

import os

import jax
import pytest

from configs import gta2cs
from configs import gta2cs_advent
from configs import gta2cs_deeplab
from configs import gta2cs_minent
from dakd_jax import config as config_lib
from dakd_jax import errors
from dakd_jax import experiment
from dakd_jax import methods
from dakd_jax import networks as networks_lib
from dakd_jax import stages as stages_lib
from dakd_jax.tools import stage_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# method.md §2.3, §3.3, §4.4: (script, batch, source H x W, target H x W, horizon, stop, head lr x).
OFFICIAL = {
    'train_gta2cs_multi_drn38.py': (5, (512, 1024), None, 100_000, 100_000, 1),
    'train_gta2cs_multi_drn22.py': (3, (512, 1024), (720, 1280), 250_000, 200_000, 1),
    'train_gta2cs_ts_multi.py': (2, (512, 1024), (720, 1280), 50_000, 50_000, 1),
    'train_gta2cityscapes_multi.py': (1, (720, 1280), (512, 1024), 250_000, 150_000, 10),
    'advent.yml': (1, (720, 1280), (512, 1024), 250_000, 120_000, 10),
}


def plan(config, tmp_path):
  return {s.name: s for s in stages_lib.plan(config, str(tmp_path))}


@pytest.mark.parametrize('module', [gta2cs, gta2cs_deeplab, gta2cs_advent, gta2cs_minent])
def test_stages_follow_the_official_scripts(module, tmp_path):
  config = module.get_config()
  checked = 0
  for name, stage in plan(config, tmp_path).items():
    script = next((s for s in OFFICIAL if s in config.stages[name].reference), None)
    if script is None:
      continue
    batch, source, target, horizon, stop, head = OFFICIAL[script]
    assert (stage.batch_size, stage.source.size, stage.schedule_steps, stage.num_steps,
            stage.optim.head_lr_mult) == (batch, source, horizon, stop, head), (name, script)
    # Every script: SGD 2.5e-4, momentum 0.9, WD 5e-4, poly 0.9; discriminators Adam 1e-4.
    assert (stage.optim.lr, stage.optim.momentum, stage.optim.weight_decay, stage.optim.power,
            stage.optim.d_lr) == (2.5e-4, 0.9, 5e-4, 0.9, 1e-4)
    if target is not None:
      assert stage.target.size == target, (name, script)
    else:  # The DRN-D-38 script's portrait target is a named deliberate difference.
      assert "parses as 512 wide, 1024 tall" in config.stages[name].deviations
    checked += 1
  assert checked >= 5


def test_a_stage_seed_replaces_the_run_seed_for_that_stage_only(tmp_path):
  config = gta2cs.get_config()
  config.seed = 3
  config.stages.teacher.seed = 0
  stages = plan(config, tmp_path)
  assert (stages['teacher'].seed, stages['student'].seed) == (0, 3)
  assert experiment.run_settings(config, stages['teacher']).seed == 0
  assert experiment.run_settings(config, stages['student']).seed == 3
  assert experiment.run_settings(config).seed == 3
  config.stages.teacher.seed = -2
  with pytest.raises(errors.UserError, match=r"^config.stages.teacher.seed: expected -1 "):
    plan(config, tmp_path)


def test_teacher_methods_of_table_2_and_students_keep_adaptsegnet(tmp_path):
  for module, teacher_method in ((gta2cs, 'adaptsegnet'), (gta2cs_deeplab, 'adaptsegnet'),
                                 (gta2cs_advent, 'advent'), (gta2cs_minent, 'minent')):
    stages = plan(module.get_config(), tmp_path)
    assert stages['teacher'].method.name == teacher_method
    assert stages['student'].method.name == 'adaptsegnet'
    for paradigm in 'abcd':
      distill = stages[f'distill_{paradigm}'].method
      assert (distill.name, distill.paradigm, distill.adaptation.name) == (
          'dakd', paradigm, 'adaptsegnet')
  deeplab = plan(gta2cs_deeplab.get_config(), tmp_path)['teacher']
  assert deeplab.network['arch'] == 'deeplabv2_r101'
  assert deeplab.network['options']['freeze_bn_affine'] and deeplab.optim.head_lr_mult == 10


def test_stage_table_in_docs_is_current():
  with open(os.path.join(REPO, 'docs', 'stages.md')) as f:
    assert f.read() == stage_table.markdown(), (
        'docs/stages.md is stale: python -m dakd_jax.tools.stage_table > docs/stages.md')


def test_inputs_resolve_to_stage_exports(tmp_path):
  stages = plan(gta2cs.get_config(), tmp_path)
  assert stages['distill_b'].init == stages_lib.export_dir(str(tmp_path), 'student')
  assert stages['distill_d'].init == stages_lib.export_dir(str(tmp_path), 'distill_c')
  assert stages['distill_c'].frozen == {'teacher': stages_lib.export_dir(str(tmp_path),
                                                                         'teacher')}
  assert stages['distill_c'].frozen_networks['teacher']['arch'] == 'drn_d_38'
  assert stages['teacher'].init == '' and stages['source_only'].method.players(19) == {}


def _save_random(directory, spec, trained_by=None):
  model = networks_lib.create_segmentation_model(spec)
  variables = networks_lib.init_variables(model, jax.random.PRNGKey(0))
  networks_lib.save_network(str(directory), {**spec, 'trained_by': trained_by} if trained_by
                            else spec, variables)
  return str(directory)


def test_paradigm_d_needs_a_c_student(tmp_path):
  config = gta2cs.get_config()
  config.networks.student.options.width = 1 / 16
  config.pipeline = ('distill_d',)
  # Missing: (c) has not run in the workdir and is not in the pipeline.
  with pytest.raises(ValueError, match=r"config\.stages\.distill_d\.init: stage 'distill_c' has "
                                       r'not run in .*add it to the pipeline'):
    stages_lib.plan(config, str(tmp_path))
  config.pipeline = ('teacher', 'student', 'distill_c', 'distill_d')
  assert stages_lib.plan(config, str(tmp_path))[-1].init == stages_lib.export_dir(
      str(tmp_path), 'distill_c')
  # A directory: only a student distilled with paradigm (c) will do.
  spec = stages_lib.network_spec(config, 'student')
  config.pipeline = ('distill_d',)
  adapted = _save_random(tmp_path / 'adapted', spec, {'stage': 'student',
                                                      'method': 'adaptsegnet', 'options': {}})
  config.stages.distill_d.init = adapted
  with pytest.raises(ValueError, match=r"distill_d\.init: paradigm \(d\) continues a student "
                                       r"distilled with paradigm \(c\).*adaptsegnet \(stage "
                                       r"'student'"):
    stages_lib.plan(config, str(tmp_path))
  config.stages.distill_d.init = _save_random(tmp_path / 'converted', spec)
  with pytest.raises(ValueError, match='weights with no training record'):
    stages_lib.plan(config, str(tmp_path))
  c_options = methods.options_of(methods.create('dakd', {'paradigm': 'c'}))
  config.stages.distill_d.init = _save_random(
      tmp_path / 'c', spec, {'stage': 'distill_c', 'method': 'dakd', 'options': c_options})
  config.stages.distill_d.frozen.teacher = adapted  # Any network directory can teach.
  assert stages_lib.plan(config, str(tmp_path))[0].init == str(tmp_path / 'c')


@pytest.mark.parametrize('key, value, message', [
    ('stages.teacher.method', 'foo', r'config\.stages\.teacher\.method: unknown method'),
    ('stages.teacher.method', 'minent', r"config\.stages\.teacher\.options: unknown option\(s\) "
                                        r".*set_method"),
    ('stages.distill_a.options.paradigm', 'e', r'config\.stages\.distill_a\.options\.paradigm: '
                                               r'expected one of'),
    ('stages.distill_a.options.adaptation.gan', 'wgan',
     r'config\.stages\.distill_a\.options\.adaptation\.gan: expected one of'),
    ('stages.distill_a.options.kl_mode', 'kl', r'config\.stages\.distill_a\.options\.kl_mode'),
    ('stages.student.network', 'resnet', r'config\.stages\.student\.network: expected one of'),
    ('stages.student.schedule_steps', 10, r'config\.stages\.student\.schedule_steps: expected 0 '
                                          r'\(= num_steps\) or a poly horizon >= num_steps'),
    ('stages.student.batch_size', 0, r'config\.stages\.student\.batch_size'),
    ('stages.student.source.size', (64,), r'config\.stages\.student\.source\.size: expected '
                                          r'\(height, width\)'),
    ('stages.student.source.dataset', 'kitti', r'config\.stages\.student\.source\.dataset'),
    ('stages.student.source.sizes', ((64, 64), (32,)),
     r'config\.stages\.student\.source\.sizes\[1\]: expected \(height, width\)'),
    ('stages.student.source.sizes', ((64, 64), (32, 32)),
     r'config\.stages\.student\.source\.sizes: images of several sizes need '
     r'stages\.student\.source\.augment\.crop'),
    ('stages.distill_a.init', 'stage:nope', r"distill_a\.init: 'stage:nope' names no stage"),
    ('stages.distill_a.init', '/nonexistent', r'distill_a\.init: expected a variables directory'),
    ('stages.distill_a.players', 'stage:distill_c', r"distill_a\.players: stage 'distill_c' has "
                                                    r'not run'),
    ('stages.distill_a.init', '.', r'distill_a\.init: \. holds no model\.json'),
    ('stages.teacher.trained', '/nonexistent', r'config\.stages\.teacher\.trained: expected'),
])
def test_invalid_stage_fails_with_the_key(key, value, message, tmp_path):
  config = gta2cs.get_config()
  config.pipeline = ('teacher', 'student', 'distill_a')
  config.update_from_flattened_dict({key: value})
  with pytest.raises(ValueError, match=message):
    stages_lib.plan(config, str(tmp_path))


def test_frozen_inputs_must_match_the_method(tmp_path):
  config = gta2cs.get_config()
  config.stages.student.frozen = config.stages.distill_a.frozen  # adaptsegnet needs none
  config.pipeline = ('teacher', 'student')
  with pytest.raises(ValueError, match=r"config\.stages\.student\.frozen: method 'adaptsegnet' "
                                       r"needs exactly \[\], got \['teacher'\]"):
    stages_lib.plan(config, str(tmp_path))


@pytest.mark.parametrize('key, value, message', [
    ('mode', 'adapt', r'config\.mode: expected one of'),
    ('pipeline', ('teacher', 'nope'), r'config\.pipeline: expected names of config\.stages'),
    ('pipeline', (), r'config\.pipeline: expected at least one stage'),
    ('eval.select', 'best_oracle', r'config\.eval\.every: expected a positive step interval'),
    ('eval.label_size', (512,), r'config\.eval\.label_size: expected \(height, width\)'),
    ('frozen_dtype', 'int8', r'config\.frozen_dtype: expected one of'),
    ('bn_sync', 'local', r'config\.bn_sync: expected one of'),
    ('roots.gta5', '/nonexistent/gta5', r'config\.roots\.gta5: expected an existing directory'),
    ('networks.teacher.init', '/nonexistent', r'config\.networks\.teacher\.init: expected a '
                                              r'variables directory'),
    ('train.prefetch_to_device', -1, r'config\.train\.prefetch_to_device: expected'),
])
def test_invalid_run_field_fails_with_the_key(key, value, message):
  config = gta2cs.get_config()
  config.update_from_flattened_dict({key: value})
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


def test_pipeline_names_from_the_command_line():
  config = gta2cs.get_config()
  config.pipeline = ('teacher,student',)  # What ml_collections makes of --config.pipeline=a,b
  assert config_lib.pipeline_names(config) == ['teacher', 'student']
  config.pipeline = ('distill_d',)
  assert config_lib.pipeline_names(config) == ['distill_d']


def test_method_options_round_trip_and_defaults_are_the_official_values():
  for name in methods.METHODS:
    method = methods.create(name, methods.default_options(name))
    assert methods.create(name, methods.options_of(method)) == method
  dakd = methods.create('dakd', {})
  assert (dakd.lambda_kl, dakd.kl_aux_factor, dakd.lambda_mse, dakd.lambda_ce, dakd.gamma) == (
      0.1, 0.1, 0.01, 1.0, 1.0)
  assert (dakd.adaptation.lambda_adv_aux, dakd.adaptation.lambda_adv_main,
          dakd.adaptation.lambda_seg_aux) == (2e-4, 1e-3, 0.1)
  assert set(methods.create('adaptsegnet', {}).players(19)) == {'disc_aux', 'disc_main'}
  assert methods.create('minent', {}).players(19) == {}
