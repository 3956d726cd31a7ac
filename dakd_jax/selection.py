"""Oracle checkpoint selection: the best of the evaluations made during training.

ADVENT's default test mode and DiGA keep the snapshot that scores best on the *target validation
labels*, which unsupervised adaptation is not supposed to have. dakd-jax reports the last weights;
with `eval.select='best_oracle'` a stage also evaluates every `eval.every` steps, keeps the best
network under `<stage>/oracle/` and the pipeline reports it in its own row, labelled as an oracle.

Files: `eval_history.jsonl` (one `{"step", "miou", ...}` line per evaluation) and
`oracle/{export/, oracle.json}`. On resume from step `s`, evaluations after `s` are forgotten (the
resumed run replays them exactly), and so is an oracle found after `s`.
"""

import json
import os
import shutil

import jax

from dakd_jax import networks

HISTORY_FILE = 'eval_history.jsonl'
ORACLE_SUBDIR = 'oracle'
ORACLE_FILE = 'oracle.json'


class OracleSelection:
  """Records evaluations of one stage and keeps the best-scoring network (by mIoU)."""

  def __init__(self, stage_dir, network_spec, resume_step):
    self.history_path = os.path.join(stage_dir, HISTORY_FILE)
    self.oracle_dir = os.path.join(stage_dir, ORACLE_SUBDIR)
    self.spec = network_spec
    self.history = [entry for entry in _read_lines(self.history_path)
                    if entry['step'] <= resume_step]
    best = read_oracle(stage_dir)
    if best is not None and best['step'] > resume_step:
      best = None
    self.best = best
    if jax.process_index() == 0:
      _write_lines(self.history_path, self.history)
      if best is None:
        shutil.rmtree(self.oracle_dir, ignore_errors=True)

  def record(self, step, metrics, variables):
    """Adds an evaluation at `step`; exports `variables` if it is the best so far."""
    entry = {'step': int(step), **metrics}
    self.history.append(entry)
    if jax.process_index() == 0:
      with open(self.history_path, 'a') as f:
        f.write(json.dumps(entry) + '\n')
    if self.best is None or metrics['miou'] > self.best['miou']:
      networks.save_network(os.path.join(self.oracle_dir, 'export'), self.spec, variables)
      self.best = entry
      if jax.process_index() == 0:
        tmp = os.path.join(self.oracle_dir, ORACLE_FILE + '.tmp')
        with open(tmp, 'w') as f:
          json.dump(entry, f, indent=2)
        os.replace(tmp, os.path.join(self.oracle_dir, ORACLE_FILE))


def read_oracle(stage_dir):
  """The oracle's `step` and metrics plus `num_evaluations` (all made so far), or None."""
  path = os.path.join(stage_dir, ORACLE_SUBDIR, ORACLE_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    record = json.load(f)
  history = _read_lines(os.path.join(stage_dir, HISTORY_FILE))
  return {**record, 'num_evaluations': len(history)}


def _read_lines(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _write_lines(path, entries):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.writelines(json.dumps(e) + '\n' for e in entries)
  os.replace(tmp, path)
