"""Stages: the spec of one training stage (the config boundary) and its bookkeeping on disk.

`plan(config, workdir)` turns the config's stages into `StageSpec`s, plain frozen dataclasses
that everything below the experiment takes instead of the config, and checks every stage of the
pipeline before anything runs: its method and options, its sizes, and that every input
('stage:<name>' or a directory) exists or will exist when its turn comes.

A stage directory (`<workdir>/<name>/`):
  checkpoints/   Orbax CheckpointManager: TrainState + both grain iterator states per saved step.
  export/        the trained network as a variables directory (`networks.py`), `trained_by` set.
  players/<name>/  the method's players (discriminators) as variables directories.
  eval/          metrics.json, prediction PNGs and the picture grid (`evaluate.py`).
  oracle/        with eval.select='best_oracle': the best evaluated network and its step.
  pseudo_labels/ a method's offline target labels, `<name>.png` (`dakd_jax/offline.py`).
  events.out.tfevents.*, metrics.jsonl, eval_history.jsonl   logged losses, rates, evaluations
                 (TensorBoard reads the events: `tensorboard --logdir <workdir>`).
  stage.json     written last: the stage is complete and is skipped when run again.
"""

import dataclasses
import json
import os
from typing import Any

import jax

from dakd_jax import config as config_lib
from dakd_jax import errors
from dakd_jax import methods
from dakd_jax import networks
from dakd_jax import optim
from dakd_jax.data import labels
from dakd_jax.data import pipeline as data_pipeline
from dakd_jax.data.builders import BUILDERS

STAGE_FILE = 'stage.json'
CONFIG_RECORD = 'stage_config.json'  # The settings the stage ran with.
EXPORT_SUBDIR = 'export'
PLAYERS_SUBDIR = 'players'


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """Everything one stage needs, resolved: no config object and no stage reference left.

  Attributes:
    name: the stage's key in `config.stages` (and its directory name).
    row: its row label in the results table.
    method: the method, built from the stage's options.
    network: the trained network's spec `{'arch', 'num_classes', 'options'}`.
    batch_size: global batch per domain.
    source, target: the two training streams.
    num_steps: updates run; schedule_steps: the poly horizon (>= num_steps).
    optim: the optimisers.
    init: variables directory the network starts from ('' = random).
    frozen: `{role: variables directory}` of the frozen networks (e.g. the teacher).
    frozen_networks: `{role: network spec}` of those networks.
    players: directory holding `<player>/` variables directories to start the players from
      ('' = random).
    trained: a variables directory holding the already trained network ('' = train it).
    seed: the seed it trains with: its own (`stages.<name>.seed`) or the run's.
  """
  name: str
  row: str
  method: methods.Method
  network: dict[str, Any]
  batch_size: int
  source: data_pipeline.Stream
  target: data_pipeline.Stream
  num_steps: int
  schedule_steps: int
  optim: optim.OptimSpec
  init: str = ''
  frozen: dict[str, str] = dataclasses.field(default_factory=dict)
  frozen_networks: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  players: str = ''
  trained: str = ''
  seed: int = 0

  def trained_by(self) -> dict[str, Any]:
    """The record written into the export's model.json."""
    return {'stage': self.name, 'method': self.method.name,
            'options': methods.options_of(self.method)}


def stage_dir(workdir, name):
  return os.path.join(workdir, name)


def export_dir(workdir, name):
  return os.path.join(stage_dir(workdir, name), EXPORT_SUBDIR)


def players_dir(workdir, name):
  return os.path.join(stage_dir(workdir, name), PLAYERS_SUBDIR)


def is_complete(directory):
  return os.path.exists(os.path.join(directory, STAGE_FILE))


def read_record(directory):
  with open(os.path.join(directory, STAGE_FILE)) as f:
    return json.load(f)


def _write_json(path, obj):
  """Writes `obj` as JSON to `path` atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(path + '.tmp', path)


def mark_complete(directory, record):
  """Writes `stage.json` last, atomically: the stage will be skipped from now on."""
  _write_json(os.path.join(directory, STAGE_FILE), record)


def check_config_record(directory, name, fields, *, allow_longer=False, added=None):
  """Records the settings a stage runs with; refuses to reuse its directory with others.

  Args:
    directory: the stage directory.
    name: the stage name (for the message).
    fields: `{dotted key: JSON value}` of every setting that changes what the stage trains.
    allow_longer: accept a record that differs only by a smaller `num_steps`: training goes on
      to the new step count from the stage's last checkpoint.
    added: `{dotted key: value}` of settings newer than some records: a record without the key
      matches that value (`config.ADDED_STAGE_SETTINGS`); keys that `fields` lacks (another
      method's options) play no part.

  Returns:
    Whether the stage must train further than its record (only with `allow_longer`).

  Raises:
    errors.UserError: the record differs; one line with the differences.
  """
  path = os.path.join(directory, CONFIG_RECORD)
  fields = json.loads(json.dumps(fields))  # Tuples as lists, as read back.
  if not os.path.exists(path):
    _write_json(path, fields)
    return False
  with open(path) as f:
    recorded = {**{k: v for k, v in (added or {}).items() if k in fields}, **json.load(f)}
  diff = [k for k in sorted(set(recorded) | set(fields)) if recorded.get(k) != fields.get(k)]
  if not diff:
    return False
  longer = diff == ['stage.num_steps'] and fields['stage.num_steps'] > recorded['stage.num_steps']
  if longer and allow_longer:
    _write_json(path, fields)
    return True
  shown = '; '.join(f'{k}: {recorded.get(k)!r} -> {fields.get(k)!r}' for k in diff[:3])
  more = f' (and {len(diff) - 3} more)' if len(diff) > 3 else ''
  hint = (', or set --config.train.allow_longer=True to train on to the new num_steps'
          if longer else '')
  raise errors.UserError(
      f'stages.{name}: {directory} was run with other settings ({shown}{more}); use another '
      f'--workdir or delete that directory{hint}')


def network_spec(config, name):
  """`{'arch', 'num_classes', 'options'}` of `config.networks.<name>`."""
  net = config.networks[name]
  return {'arch': net.arch, 'num_classes': config.num_classes, 'options': dict(net.options)}


def _stream(config, key, cfg):
  config_lib.check_one_of(f'{key}.dataset', cfg.dataset, tuple(config.roots))
  space = BUILDERS[cfg.dataset].LABEL_SPACE
  if space not in labels.label_set(config.num_classes).luts:
    raise errors.UserError(f'config.{key}.dataset: {cfg.dataset} ({space} labels) has no mapping '
                           f'to num_classes {config.num_classes}')
  config_lib.check_size(f'{key}.size', cfg.size)
  aug = cfg.augment
  config_lib.check_size(f'{key}.augment.crop', aug.crop, optional=True)
  for i, size in enumerate(cfg.sizes):
    config_lib.check_size(f'{key}.sizes[{i}]', size)
  if cfg.sizes and not aug.crop:
    raise errors.UserError(f'config.{key}.sizes: images of several sizes need '
                           f'{key}.augment.crop to be batched together; got no crop')
  return data_pipeline.Stream(
      dataset=cfg.dataset, root=config.roots[cfg.dataset], split=cfg.split,
      size=tuple(cfg.size), normalization=config.normalization, num_classes=config.num_classes,
      skip_unreadable=bool(config.skip_unreadable_images),
      sizes=tuple(tuple(size) for size in cfg.sizes),
      augment=data_pipeline.Augment(
          random_scale=tuple(aug.random_scale) if aug.random_scale else None,
          crop=tuple(aug.crop) if aug.crop else None, flip=bool(aug.flip),
          per_axis_scale=bool(aug.per_axis_scale), crop_redraws=int(aug.crop_redraws)))


class _Resolver:
  """Turns stage inputs into directories, knowing which stages run before which."""

  def __init__(self, config, workdir, order):
    self.config, self.workdir, self.order = config, workdir, order

  def _stage(self, key, ref, consumer):
    """The stage a 'stage:<name>' reference names, once checked to exist in time; else None."""
    if not ref.startswith(config_lib.STAGE_REF):
      if not os.path.isdir(ref):
        raise errors.UserError(f'config.{key}: expected a variables directory or '
                               f"'{config_lib.STAGE_REF}<name>', got {ref!r}")
      return None
    name = ref[len(config_lib.STAGE_REF):]
    if name not in self.config.stages:
      raise errors.UserError(f'config.{key}: {ref!r} names no stage of config.stages '
                             f'({", ".join(self.config.stages)})')
    earlier = name in self.order and self.order.index(name) < self.order.index(consumer)
    if (not earlier and not self.config.stages[name].trained
        and not is_complete(stage_dir(self.workdir, name))):
      raise errors.UserError(
          f'config.{key}: stage {name!r} has not run in {self.workdir} and does not run before '
          f'{consumer!r} in config.pipeline; add it to the pipeline, or give a variables '
          'directory instead')
    return name

  def output(self, key, ref, consumer):
    """The variables directory of the network `ref` names; `consumer` is the stage reading it."""
    name = self._stage(key, ref, consumer)
    if name is None:
      return ref
    return self.config.stages[name].trained or export_dir(self.workdir, name)

  def players(self, key, ref, consumer):
    """The directory of the players `ref` names."""
    name = self._stage(key, ref, consumer)
    if name is None:
      return ref
    if self.config.stages[name].trained:
      raise errors.UserError(
          f'config.{key}: stage {name!r} is given as trained, so it has no players '
          'here; give their directory instead')
    return players_dir(self.workdir, name)

  def network(self, key, ref, consumer):
    """The spec of the network `ref` names, with `trained_by` (None for converted weights)."""
    name = self._stage(key, ref, consumer)
    directory = self.output(key, ref, consumer)
    if os.path.exists(os.path.join(directory, networks.MODEL_FILE)):
      return {'trained_by': None, **networks.read_model_spec(directory)}
    if name is None or self.config.stages[name].trained:
      raise errors.UserError(
          f'config.{key}: {directory} holds no {networks.MODEL_FILE}; expected a '
          'variables directory written by dakd_jax.tools.convert or a finished stage')
    stage = self.config.stages[name]  # A stage that has not run yet.
    method = methods.create(stage.method, stage.options.to_dict())
    return {**network_spec(self.config, stage.network), 'trained_by': {
        'stage': name, 'method': method.name, 'options': methods.options_of(method)}}


def _without_record(spec):
  return {k: v for k, v in spec.items() if k != 'trained_by'}


def build(config, name, workdir, order):
  """The `StageSpec` of stage `name`; `order` is the pipeline it runs in. Validates it."""
  cfg = config.stages[name]
  key = f'stages.{name}'
  resolve = _Resolver(config, workdir, order)
  method = methods.create(cfg.method, cfg.options.to_dict(), key=f'config.{key}.options',
                          method_key=f'config.{key}.method')
  config_lib.check_one_of(f'{key}.network', cfg.network, tuple(config.networks))
  if cfg.batch_size < 1:
    raise errors.UserError(
        f'config.{key}.batch_size: expected a positive int, got {cfg.batch_size!r}')
  if cfg.num_steps < 1 or cfg.schedule_steps < 0 or 0 < cfg.schedule_steps < cfg.num_steps:
    raise errors.UserError(
        f'config.{key}.schedule_steps: expected 0 (= num_steps) or a poly horizon '
        f'>= num_steps={cfg.num_steps} >= 1, got {cfg.schedule_steps!r}')
  # An empty entry for a role the method does not need is left out (a config's default input
  # that an option switched off, e.g. the translator stage's 'vgg' with lambda_percep=0).
  frozen = {role: ref for role, ref in cfg.frozen.items() if ref or role in method.frozen}
  if set(frozen) != set(method.frozen):
    raise errors.UserError(f'config.{key}.frozen: method {method.name!r} needs exactly '
                           f'{sorted(method.frozen)}, got {sorted(frozen)}')
  if not isinstance(cfg.seed, int) or cfg.seed < -1:
    raise errors.UserError(
        f"config.{key}.seed: expected -1 (the run's seed) or a seed >= 0, got {cfg.seed!r}")
  trained = cfg.trained
  if trained and not os.path.isdir(trained):
    raise errors.UserError(f'config.{key}.trained: expected a variables directory, got {trained!r}')
  init = config.networks[cfg.network].init
  if cfg.init:
    init = resolve.output(f'{key}.init', cfg.init, name)
  if not trained:
    init_record = resolve.network(f'{key}.init', cfg.init, name)['trained_by'] if cfg.init else None
    reason = method.check_init(init_record)
    if reason:
      raise errors.UserError(
          f'config.{key}.init: {reason}; set it to a suitable stage or directory')
  return StageSpec(
      name=name, row=cfg.row, method=method, network=network_spec(config, cfg.network),
      batch_size=cfg.batch_size, source=_stream(config, f'{key}.source', cfg.source),
      target=_stream(config, f'{key}.target', cfg.target), num_steps=cfg.num_steps,
      schedule_steps=cfg.schedule_steps or cfg.num_steps,
      optim=optim.OptimSpec(**cfg.optim.to_dict()), init=init,
      frozen={role: resolve.output(f'{key}.frozen.{role}', ref, name)
              for role, ref in frozen.items()},
      frozen_networks={role: _without_record(resolve.network(f'{key}.frozen.{role}', ref, name))
                       for role, ref in frozen.items()},
      players=resolve.players(f'{key}.players', cfg.players, name) if cfg.players else '',
      trained=trained, seed=config.seed if cfg.seed == -1 else cfg.seed)


def plan(config, workdir):
  """`StageSpec`s of `config.pipeline`, in order, each checked before anything runs."""
  order = config_lib.pipeline_names(config)
  return [build(config, name, workdir, order) for name in order]
