"""The fault suite: user mistakes end in one line, damaged or interrupted runs lose nothing.

Each case is a real process or a real file damaged at a real moment; `docs/reliability.md` lists
them with what the user sees.
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from dakd_jax import config as config_lib
from dakd_jax import errors
from dakd_jax import experiment
from dakd_jax import networks as networks_lib
from dakd_jax import stages as stages_lib
from dakd_jax.data import pipeline as data_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, 'configs', 'tiny.py')
STEPS = 20  # Of the runs killed, stopped or starved of disk space in their own processes.


def _main(args, devices=1, wrap=None, **kwargs):
  """`python -m dakd_jax.main ARGS` on `devices` CPU devices; `wrap(command) -> argv` runs the
  command line (a string) another way."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  env.pop('DAKD_VERBOSE', None)
  argv = [sys.executable, '-m', 'dakd_jax.main', *args]
  if wrap is not None:
    argv = wrap(shlex.join(argv))
  return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kwargs)


def _user_error_line(args, tmp_path):
  proc = _main(list(args) + ['--workdir', str(tmp_path / 'run')])
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == errors.EXIT_USER_ERROR, err[-2000:]
  assert 'Traceback' not in err, err[-2000:]
  return err.strip().splitlines()[-1]


@pytest.mark.parametrize('args, expected', [
    pytest.param(['--config', 'configs/nope.py'],
                 'error: --config configs/nope.py: no such file', marks=pytest.mark.slow),
    (['--config', TINY, '--config.stages.student.batch_sise=2'],
     'error: config.stages.student.batch_sise: no such field; did you mean batch_size?'),
    pytest.param(['--config', TINY, '--config.seed=abc'],
                 'error: flag --config.seed=abc: invalid literal', marks=pytest.mark.slow),
    pytest.param(['--config', TINY, '--config.roots.gta5=/no/such/dir'],
                 "error: config.roots.gta5: expected an existing directory, got '/no/such/dir'",
                 marks=pytest.mark.slow),
])
def test_config_mistakes_end_in_one_line(args, expected, tmp_path):
  assert _user_error_line(args, tmp_path).startswith(expected)


@pytest.mark.slow
def test_show_config_lists_every_field_with_the_overrides():
  proc = _main(['--config', TINY, '--show_config', '--config.stages.student.optim.lr=0.5'])
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  lines = out.splitlines()
  assert 'config.stages.student.optim.lr = 0.5' in lines
  assert 'config.skip_unreadable_images = False' in lines
  assert all(line.startswith('config.') and ' = ' in line for line in lines)
  proc = _main(['--config', TINY])  # Without --show_config a run needs its directory.
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == errors.EXIT_USER_ERROR
  assert err.strip().splitlines() == ['error: --workdir: required (the directory for '
                                      'checkpoints, logs and results)']


@pytest.mark.slow
def test_verbose_keeps_the_traceback(tmp_path):
  proc = _main(['--config', TINY, '--config.roots.gta5=/no/such/dir', '--verbose',
                '--workdir', str(tmp_path)])
  _, err = proc.communicate(timeout=300)
  assert proc.returncode != 0 and 'Traceback' in err


def test_stage_record_refuses_other_settings_and_extends_on_request(tmp_path):
  fields = {'stage.num_steps': 10, 'stage.optim.lr': 0.01, 'seed': 0}
  assert not stages_lib.check_config_record(str(tmp_path), 's', fields)
  assert not stages_lib.check_config_record(str(tmp_path), 's', dict(fields))
  with pytest.raises(errors.UserError, match=r"stages.s: .* \(stage.optim.lr: 0.01 -> 0.02\)"):
    stages_lib.check_config_record(str(tmp_path), 's', {**fields, 'stage.optim.lr': 0.02})
  longer = {**fields, 'stage.num_steps': 20}
  with pytest.raises(errors.UserError, match='allow_longer=True'):
    stages_lib.check_config_record(str(tmp_path), 's', longer)
  assert stages_lib.check_config_record(str(tmp_path), 's', longer, allow_longer=True)
  assert not stages_lib.check_config_record(str(tmp_path), 's', longer)  # Now the record.
  with pytest.raises(errors.UserError, match='stage.num_steps: 20 -> 10'):  # Never shorter.
    stages_lib.check_config_record(str(tmp_path), 's', fields, allow_longer=True)


def test_stage_record_without_a_newer_setting_matches_its_old_behaviour(tmp_path):
  """A directory recorded before `stage.optim.optimizer`, `betas`, `d_optimizer` and DiGA's
  augmentation settings existed resumes when they keep the values that reproduce it (SGD, Adam
  betas (0.9, 0.99), Adam players, one rescale factor, no crop redraws), and is refused
  otherwise."""
  old = {'stage.num_steps': 10, 'stage.optim.lr': 0.01}
  assert not stages_lib.check_config_record(str(tmp_path), 's', old)
  added = config_lib.ADDED_STAGE_SETTINGS
  stream_defaults = {f'stage.{s}.augment.{k}': v for s in ('source', 'target')
                     for k, v in (('per_axis_scale', False), ('crop_redraws', 0))}
  now = {**old, 'stage.optim.optimizer': 'sgd', 'stage.optim.betas': (0.9, 0.99),
         'stage.optim.d_optimizer': 'adam', **stream_defaults}
  assert not stages_lib.check_config_record(str(tmp_path), 's', now, added=added)
  with pytest.raises(errors.UserError, match="stage.optim.optimizer: 'sgd' -> 'adam'"):
    stages_lib.check_config_record(str(tmp_path), 's', {**now, 'stage.optim.optimizer': 'adam'},
                                   added=added)
  with pytest.raises(errors.UserError, match='stage.source.augment.crop_redraws: 0 -> 5'):
    stages_lib.check_config_record(str(tmp_path), 's',
                                   {**now, 'stage.source.augment.crop_redraws': 5}, added=added)
  with pytest.raises(errors.UserError, match='stage.optim.betas: None'):  # Only when declared.
    stages_lib.check_config_record(str(tmp_path), 's', now)


def _exported(workdir, stage='student'):
  return networks_lib.load_network(stages_lib.export_dir(workdir, stage))[1]


def _assert_same(a, b, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=atol)


@pytest.mark.slow
# Orbax's cancelled reads of the damaged checkpoints call back into its event loop after it has
# closed; Python ignores those exceptions (the CLI logs them at DEBUG), pytest would list each.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_damaged_checkpoints_fall_back_to_the_newest_readable_one(tiny_config, tmp_path, caplog):
  six = {'stages.student.num_steps': 6}
  experiment.run(tiny_config(**six), str(tmp_path / 'straight'))
  damaged = str(tmp_path / 'damaged')
  experiment.run(tiny_config(**six), damaged)
  stage = stages_lib.stage_dir(damaged, 'student')
  os.remove(os.path.join(stage, stages_lib.STAGE_FILE))  # As if killed before the export.
  state_dir = os.path.join(stage, 'checkpoints', '6', 'state')
  truncated = 0
  for root, _, files in os.walk(state_dir):
    for name in files:
      path = os.path.join(root, name)
      if os.path.getsize(path) > 64 and name != '_METADATA':
        with open(path, 'r+b') as f:
          f.truncate(os.path.getsize(path) // 2)
        truncated += 1
  assert truncated
  # The next older one loses its array data files (deleted): the run resumes from step 2.
  data_dir = os.path.join(stage, 'checkpoints', '4', 'state', 'ocdbt.process_0', 'd')
  for name in os.listdir(data_dir):
    os.remove(os.path.join(data_dir, name))
  with caplog.at_level('INFO'):
    experiment.run(tiny_config(**six), damaged)
  for step in (6, 4):
    assert f'checkpoint step {step} of' in caplog.text
  assert caplog.text.count('is unreadable') == 2 and 'resumed from step 2' in caplog.text
  aside = os.path.join(stage, 'checkpoints.unreadable')
  assert sorted(n.split('.')[0] for n in os.listdir(aside)) == ['4', '6']  # Moved, not deleted.
  _assert_same(_exported(str(tmp_path / 'straight')), _exported(damaged))


@pytest.mark.slow
def test_changed_config_of_a_finished_stage_is_refused_then_extended(tiny_config, tmp_path):
  workdir = str(tmp_path)
  experiment.run(tiny_config(), workdir)
  with pytest.raises(errors.UserError, match=r'stage.optim.lr: 0.01 -> 0.02'):
    experiment.run(tiny_config(**{'stages.student.optim.lr': 0.02}), workdir)
  experiment.run(tiny_config(**{'stages.student.num_steps': 4, 'train.allow_longer': True}),
                 workdir)
  record = stages_lib.read_record(stages_lib.stage_dir(workdir, 'student'))
  assert record['step'] == 4
  with open(os.path.join(workdir, 'student', 'metrics.jsonl')) as f:
    assert [json.loads(line)['step'] for line in f] == [2, 4]


@pytest.mark.slow
def test_unknown_label_ids_stop_the_run_with_one_line(tiny_config, synthetic_root, tmp_path):
  # A copy of the target whose validation labels hold only 'unlabeled' (id 0 -> ignore).
  import shutil  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  target = tmp_path / 'cityscapes'
  shutil.copytree(os.path.join(synthetic_root, 'cityscapes'), target)
  for root, _, files in os.walk(target / 'gtFine' / 'val'):
    for name in files:
      if name.endswith('_labelIds.png'):
        path = os.path.join(root, name)
        Image.fromarray(np.zeros_like(np.asarray(Image.open(path)))).save(path)
  config = tiny_config(**{'roots.cityscapes': str(target), 'data_dir': str(tmp_path / 'tfds')})
  with pytest.raises(errors.UserError, match='every label pixel of the 6 evaluated images maps '
                     r'to ignore \(255\)'):
    experiment.run(config, str(tmp_path / 'run'))


@pytest.mark.slow
def test_non_finite_loss_stops_and_names_a_finite_checkpoint(tiny_config, tmp_path):
  config = tiny_config(**{'stages.student.num_steps': 8, 'stages.student.optim.lr': 1e6})
  with pytest.raises(FloatingPointError, match='non-finite values at step') as info:
    experiment.run(config, str(tmp_path))
  message = str(info.value)
  assert ('whose losses were finite' in message) != ('no checkpoint had been written' in message)
  with open(os.path.join(tmp_path, 'student', 'metrics.jsonl')) as f:
    logged = [json.loads(line) for line in f]  # Flushed: readable right after the failure.
  assert all(v is None or np.isfinite(v) for r in logged for v in r.values())


def _common_args(synthetic_root, tfds_dir, checkpoint_every):
  return ['--config', TINY, f'--config.roots.gta5={synthetic_root}/gta5',
          f'--config.roots.cityscapes={synthetic_root}/cityscapes',
          f'--config.data_dir={tfds_dir}', f'--config.stages.student.num_steps={STEPS}',
          f'--config.train.checkpoint_every={checkpoint_every}', '--config.train.log_every=1']


def _run_to_completion(args):
  proc = _main(args, devices=8)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]


def _started(workdir):
  """A training process on `workdir`, returned once it has logged its first steps."""
  metrics = os.path.join(workdir, 'student', 'metrics.jsonl')
  deadline = time.time() + 600
  while not (os.path.exists(metrics) and os.path.getsize(metrics) > 100):
    time.sleep(0.05)
    assert time.time() < deadline
  return metrics


@pytest.fixture(scope='module')
def straight_run(synthetic_root, tfds_dir, tmp_path_factory):
  """The workdir of an uninterrupted `STEPS`-step run of the student in its own process."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.roots.gta5 = os.path.join(synthetic_root, 'gta5')
  config.roots.cityscapes = os.path.join(synthetic_root, 'cityscapes')
  config.data_dir = tfds_dir
  workdir = str(tmp_path_factory.mktemp('straight'))
  experiment.prepare_inputs(config, workdir)
  _run_to_completion(_common_args(synthetic_root, tfds_dir, 1000) + ['--workdir', workdir])
  return workdir


@pytest.mark.slow
def test_kill_9_during_checkpoint_writes_resumes_exactly(straight_run, synthetic_root, tfds_dir,
                                                         tmp_path):
  common = _common_args(synthetic_root, tfds_dir, checkpoint_every=1)  # Always writing one.
  killed = str(tmp_path / 'killed')
  proc = _main(common + ['--workdir', killed], devices=8)
  _started(killed)
  proc.kill()
  proc.communicate(timeout=60)
  assert not stages_lib.is_complete(stages_lib.stage_dir(killed, 'student'))
  _run_to_completion(common + ['--workdir', killed])
  _assert_same(_exported(straight_run), _exported(killed))


@pytest.mark.slow
def test_sigterm_checkpoints_exits_zero_and_resumes_exactly(straight_run, synthetic_root,
                                                           tfds_dir, tmp_path):
  common = _common_args(synthetic_root, tfds_dir, checkpoint_every=1000)

  stopped = str(tmp_path / 'stopped')
  proc = _main(common + ['--workdir', stopped], devices=8)
  _started(stopped)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  assert 'student: stopped by SIGTERM after step' in err
  assert not stages_lib.is_complete(stages_lib.stage_dir(stopped, 'student'))
  step = int(err.split('stopped by SIGTERM after step ')[1].split(';')[0])
  assert 0 < step < STEPS
  assert os.path.isdir(os.path.join(stopped, 'student', 'checkpoints', str(step)))

  _run_to_completion(common + ['--workdir', stopped])
  _assert_same(_exported(straight_run), _exported(stopped))


def _can_mount_a_tiny_filesystem():
  return shutil.which('unshare') is not None and subprocess.run(
      ['unshare', '-rm', 'true'], capture_output=True, check=False).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_a_tiny_filesystem(),
                    reason='needs `unshare -rm` (user and mount namespaces) for a tiny tmpfs')
def test_full_disk_stops_with_one_line_and_keeps_the_committed_checkpoints(
    straight_run, synthetic_root, tfds_dir, tmp_path):
  # The run's directory is a tmpfs with room for two and a half of its checkpoints.
  final = os.path.join(straight_run, 'student', 'checkpoints', str(STEPS))
  size_kib = int(2.5 * sum(os.stat(os.path.join(d, f)).st_blocks * 512
                           for d, _, files in os.walk(final) for f in files)) // 1024
  workdir, copy = tmp_path / 'run', tmp_path / 'copy'
  workdir.mkdir()
  args = _common_args(synthetic_root, tfds_dir, checkpoint_every=1) + [
      '--workdir', str(workdir), f'--compilation_cache_dir={tmp_path / "cache"}']
  # The tmpfs lives as long as the namespace: its content is copied out before it ends.
  wrap = lambda command: ['unshare', '-rm', 'sh', '-c', (
      f'mount -t tmpfs -o size={size_kib}k tmpfs {workdir} && {{ {command}; status=$?; '
      f'cp -a {workdir}/. {copy}/; exit $status; }}')]
  proc = _main(args, devices=8, wrap=wrap)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == errors.EXIT_USER_ERROR, err[-3000:]
  assert 'Traceback' not in err, err[-3000:]
  last = err.strip().splitlines()[-1]
  assert last.startswith(f'error: {workdir}/student/checkpoints: no space left on the device '
                         'while writing a checkpoint; the run stopped and the committed '
                         'checkpoints (steps ['), last
  kept = json.loads(last.split('(steps ')[1].split(')')[0])
  assert kept and max(kept) < STEPS
  os.rmdir(workdir)  # Unmounted with the namespace: the copy takes its place, space freed.
  os.rename(copy, workdir)
  _run_to_completion(args)
  _assert_same(_exported(straight_run), _exported(workdir))


@pytest.mark.slow
def test_missing_eval_split_and_bad_batch_are_reported_before_training(tiny_config, tmp_path):
  config = tiny_config(**{'eval.split': 'test', 'stages.student.batch_size': 3})
  with pytest.raises(errors.UserError, match=r'stages.student.batch_size=3 must be a positive '
                     'multiple of the 8 devices'):
    experiment.run(config, str(tmp_path))
  config = tiny_config(**{'eval.split': 'test'})
  with pytest.raises(errors.UserError, match="cityscapes: split 'test' not found"):
    experiment.run(config, str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, 'student', 'metrics.jsonl'))  # No step ran.


@pytest.mark.slow
def test_truncated_image_is_named_then_its_repair_is_picked_up(tiny_config, synthetic_root,
                                                                tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  source = tmp_path / 'gta5'
  shutil.copytree(os.path.join(synthetic_root, 'gta5'), source)
  image = sorted((source / 'images').iterdir())[-1]  # Not the first: read mid-epoch.
  original = image.read_bytes()
  image.write_bytes(original[:len(original) // 3])
  config = lambda: tiny_config(**{'roots.gta5': str(source), 'data_dir': str(tmp_path / 'tfds'),
                                  'stages.student.num_steps': 4})
  with pytest.raises(errors.UserError, match=f'cannot decode image images/{image.name}'):
    experiment.run(config(), str(tmp_path / 'run'))
  skipping = str(tmp_path / 'skipping')  # Or the run goes on without it, saying so.
  experiment.run(tiny_config(**{'roots.gta5': str(source), 'data_dir': str(tmp_path / 'tfds'),
                                'stages.student.num_steps': 4, 'skip_unreadable_images': True}),
                 skipping)
  with open(os.path.join(skipping, 'student', 'skipped_images.txt')) as f:
    assert f.read().startswith(f'cannot decode image images/{image.name}')
  with open(os.path.join(skipping, 'student', 'metrics.jsonl')) as f:
    assert json.loads(f.readlines()[-1])['data/skipped_images'] == 1
  image.write_bytes(original)  # Repaired on disk: the prepared copy must follow.
  data_pipeline._VERIFIED.clear()  # A new process.
  experiment.run(config(), str(tmp_path / 'run'))
  assert stages_lib.is_complete(stages_lib.stage_dir(str(tmp_path / 'run'), 'student'))
