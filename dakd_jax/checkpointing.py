"""Orbax checkpoints: model-variable files (converted or exported weights) and training state.

Two kinds of checkpoint live here, both written atomically (Orbax writes into
`<name>.orbax-checkpoint-tmp*` and renames it on success, so an interrupted save is never taken
for a checkpoint):
- variable files (`save_variables` / `load_variables`): one `{'params', 'batch_stats'}` tree, e.g.
  converted PyTorch weights or a frozen teacher;
- training checkpoints (Orbax v0 `CheckpointManager`, style.md §7): numbered step folders, each
  holding the train state (`state/`) and the state of every grain data iterator (`<name>/`, one
  JSON file per process).

Multi-host: every process must call `save_checkpoint`, `restore_checkpoint` and
`manager.wait_until_finished()`; calling them on process 0 only deadlocks. Orbax coordinates the
processes, and each writes the shards it owns plus its own iterator state.
"""

from collections.abc import Mapping
import os
import time
from typing import Any, TypeVar

from absl import logging
from etils import epath
import grain
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from dakd_jax import errors

StateT = TypeVar("StateT")

# Item name of the train state inside a step folder; data iterators use their own names.
STATE_ITEM = "state"


def _abspath(directory: str | os.PathLike[str]) -> epath.Path:
  # Orbax wants absolute paths; keep URLs (gs://...) untouched.
  directory = os.fspath(directory)
  return epath.Path(directory if "://" in directory else os.path.abspath(directory))


def save_variables(directory, variables):
  """Writes a `{'params': ..., 'batch_stats': ...}` tree as an Orbax checkpoint, atomically.

  Orbax writes into a temporary folder and renames it on success, so an interrupted save never
  leaves a half-written `directory` behind.
  """
  directory = _abspath(directory)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, variables, force=True)
    checkpointer.wait_until_finished()


def load_variables(directory):
  """Reads a tree written by `save_variables` back as a tree of JAX arrays."""
  directory = _abspath(directory)
  if not directory.exists():
    raise errors.MissingPathError(f"{directory}: no such variables checkpoint")
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(directory)


def make_checkpoint_manager(directory: str | os.PathLike[str], *, max_to_keep: int | None,
                            save_interval_steps: int,
                            async_save: bool = True) -> ocp.CheckpointManager:
  """A `CheckpointManager` over `directory` (created if missing).

  Args:
    directory: the checkpoint root (e.g. `<workdir>/checkpoints`); step folders are `<step>/`.
    max_to_keep: how many of the newest checkpoints to keep (None = all).
    save_interval_steps: `save_checkpoint` only saves at multiples of this (unless forced or on
      a preemption notice).
    async_save: write in a background thread; `save_checkpoint` returns once the arrays are
      copied to host memory. Call `manager.wait_until_finished()` before reading the files and
      `manager.close()` at the end.
  """
  if save_interval_steps <= 0:
    raise ValueError(f"save_interval_steps={save_interval_steps}: expected a positive integer")
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      # Orbax's default policy also saves the first step it sees; save only at multiples of the
      # interval (and on a preemption signal).
      save_decision_policy=policies.AnySavePolicy([
          policies.FixedIntervalPolicy(save_interval_steps),
          policies.PreemptionCheckpointingPolicy(),
      ]),
      enable_async_checkpointing=async_save,
      # Remove the tmp folders of saves that a crash interrupted before they could collide with
      # the resumed run's saves.
      cleanup_tmp_directories=True,
      create=True)
  return ocp.CheckpointManager(_abspath(directory), options=options)


def _check_iterator_names(data_iterators: Mapping[str, Any]) -> None:
  if STATE_ITEM in data_iterators:
    raise ValueError(f"data iterator name '{STATE_ITEM}' is reserved for the train state")


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: Any,
                    data_iterators: Mapping[str, grain.DatasetIterator],
                    force: bool = False) -> bool:
  """Saves `state` and the iterators' positions as step `step`, if the save interval says so.

  The iterator states are captured before this returns (their handler is synchronous), so the
  iterators may be advanced right away; arrays are written in the background when the manager is
  asynchronous. Every process must call this.

  Args:
    manager: from `make_checkpoint_manager`.
    step: the number of completed train steps.
    state: a pytree of `jax.Array`s (e.g. the `TrainState`), possibly sharded.
    data_iterators: `{name: grain iterator}`, e.g. `{'source_iter': ..., 'target_iter': ...}`.
    force: save even if `step` is not a multiple of the save interval.

  Returns:
    Whether a save was started.
  """
  _check_iterator_names(data_iterators)
  items = {name: grain.checkpoint.CheckpointSave(it) for name, it in data_iterators.items()}
  items[STATE_ITEM] = ocp.args.StandardSave(state)
  try:  # Also reports a failure of the previous, background save.
    return manager.save(step, args=ocp.args.Composite(**items), force=force)
  except Exception as e:  # pylint: disable=broad-except  (only a full disk is translated)
    _raise_if_disk_full(manager, e)
    raise


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """Waits for the background save to commit (every process must call it).

  Raises:
    errors.DiskFullError: the device filled up during a save (the committed checkpoints are
      intact: an unfinished save is never taken for a checkpoint).
  """
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except  (only a full disk is translated)
    _raise_if_disk_full(manager, e)
    raise


def _raise_if_disk_full(manager: ocp.CheckpointManager, error: BaseException) -> None:
  if not errors.is_disk_full(error):
    return
  manager.reload()
  kept = manager.all_steps()
  then = (f"the committed checkpoints (steps {list(kept)}) are intact: free space and rerun to "
          f"resume from step {max(kept)}" if kept else
          "no checkpoint had been committed: free space and rerun to start the stage afresh")
  raise errors.DiskFullError(
      f"{manager.directory}: no space left on the device while writing a checkpoint; the run "
      f"stopped and {then}") from error


def restore_checkpoint(manager: ocp.CheckpointManager, abstract_state: StateT,
                       data_iterators: Mapping[str, grain.DatasetIterator],
                       step: int | None = None) -> StateT:
  """Restores the train state and, in place, the iterators' positions. Every process calls this.

  Args:
    manager: from `make_checkpoint_manager`.
    abstract_state: the restore target: the state's structure with `jax.ShapeDtypeStruct`
      leaves that carry the target shardings (`abstract_like(state)`, or `jax.eval_shape` output
      with `.sharding` set), or a concrete state with those shardings (only its shapes, dtypes
      and shardings are used). Arrays come back with those shardings whatever layout wrote them.
    data_iterators: freshly built iterators of the same pipelines, `{name: iterator}` as saved;
      after the call each yields exactly the element that followed the saved position.
    step: the step to restore; default the latest complete one.

  Returns:
    The restored state, with the structure (dataclasses included) of `abstract_state`.
  """
  _check_iterator_names(data_iterators)
  if step is None:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"{manager.directory}: no complete checkpoint to restore")
  items = {name: grain.checkpoint.CheckpointRestore(it) for name, it in data_iterators.items()}
  items[STATE_ITEM] = ocp.args.StandardRestore(abstract_like(abstract_state))
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored[STATE_ITEM]


def _path_name(path) -> str:
  return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _check_matches(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> None:
  """Raises `errors.UserError` when checkpoint `step` holds other arrays than the state needs
  (a checkpoint of another config); read errors of its metadata propagate."""
  metadata = ocp.StandardCheckpointHandler().metadata(
      manager.directory / str(step) / STATE_ITEM)
  saved = {leaf.name: tuple(leaf.shape) for leaf in jax.tree.leaves(metadata.tree)}
  wanted = {_path_name(path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
  for name in sorted(set(saved) | set(wanted)):
    if saved.get(name) != wanted.get(name):
      raise errors.UserError(
          f"{manager.directory}/{step}: written by another configuration ({name}: checkpoint "
          f"{saved.get(name, 'absent')}, config {wanted.get(name, 'absent')}); use another "
          "--workdir or delete the stage directory")


def _one_line(error: BaseException, limit: int = 200) -> str:
  text = " ".join(str(error).split()) or type(error).__name__
  return text if len(text) <= limit else text[:limit] + "..."


def restore_newest_readable(manager: ocp.CheckpointManager, abstract_state: StateT,
                            data_iterators: Mapping[str, grain.DatasetIterator]
                            ) -> tuple[StateT | None, int]:
  """Restores the newest checkpoint that can be read; `(None, 0)` when there is none.

  A checkpoint that cannot be read (truncated or missing array files, damaged metadata) is
  reported in one warning line with its step and the reason, moved aside to
  `<checkpoint root>.unreadable/<step>` (never deleted) and the next older one is tried. The
  state and the iterators' positions always come from the same checkpoint, so resume stays exact.

  Raises:
    errors.UserError: a checkpoint of another configuration (other arrays or shapes), or
      checkpoints exist but none of them can be read.
  """
  moved = []
  while (step := manager.latest_step()) is not None:
    try:
      _check_matches(manager, step, abstract_state)
      return restore_checkpoint(manager, abstract_state, data_iterators, step=step), step
    except errors.UserError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (any read failure: try an older one)
      aside = epath.Path(f"{manager.directory}.unreadable")
      if jax.process_index() == 0:
        aside.mkdir(parents=True, exist_ok=True)
        (manager.directory / str(step)).rename(aside / f"{step}.{time.time_ns()}")
      multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
      logging.warning("checkpoint step %d of %s is unreadable (%s): moved to %s; trying the "
                      "next older one", step, manager.directory, _one_line(e), aside)
      manager.reload()
      moved.append(step)
  if moved:
    raise errors.UserError(
        f"{manager.directory}: no readable checkpoint (steps {moved} were unreadable and are "
        f"in {manager.directory}.unreadable); delete the stage directory to train it again")
  return None, 0


def latest_step(manager: ocp.CheckpointManager) -> int | None:
  """The newest complete (committed) step, or None; interrupted saves are not counted."""
  return manager.latest_step()


def abstract_like(state: Any) -> Any:
  """`state` with array leaves as `jax.ShapeDtypeStruct`s (shape, dtype, sharding); idempotent."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
