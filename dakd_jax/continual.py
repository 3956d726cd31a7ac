"""Continual adaptation results: mIoU of every step on every evaluated domain, and forgetting.

A *sequence* is a chain of stages, each initialised from the one before (`init`), each adapting to
its own target dataset (MuHDi: GTA5 -> Cityscapes -> IDD -> Mapillary). After a step, the
forgetting on an earlier target d is the mIoU the step that adapted to d reached on d minus the
current step's mIoU on d (positive = forgotten); a step's forgetting is the mean over its earlier
targets (none for the first step).

Records are the experiment's stage records: `{'stage', 'row', 'target', 'init', 'export',
'miou_by_dataset': {dataset: mIoU}}`.
"""

import math
import pathlib
from typing import Any, Mapping, Sequence


def _stage_export(path: str | None) -> tuple[str, ...] | None:
  """`<stage>/export` of an export path: records stay linked when the workdir is moved or
  copied (a completed stage's record keeps the paths it was written with)."""
  return pathlib.PurePath(path).parts[-2:] if path else None


def chain(record: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> list:
  """The records of `record`'s sequence, first step first (following `init` to `export`)."""
  by_export = {_stage_export(r['export']): r for r in records}
  steps = [record]
  while (previous := by_export.get(_stage_export(steps[0].get('init')))) and previous not in steps:
    steps.insert(0, previous)
  return steps


def forgetting(record: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> dict:
  """`{earlier target: drop in mIoU}` of `record` over the targets of its earlier steps."""
  steps = chain(record, records)
  now = _miou(record)
  return {s.get('target'): _miou(s)[s.get('target')] - now[s.get('target')]
          for s in steps[:-1] if s.get('target') in now and s.get('target') in _miou(s)}


def _miou(record: Mapping[str, Any]) -> Mapping[str, float]:
  """A record's mIoU per dataset (empty for records written before `eval.also` existed)."""
  return record.get('miou_by_dataset', {})


def _cell(value) -> str:
  return '-' if value is None or math.isnan(value) else f'{value:.2f}'


def format_table(records: Sequence[Mapping[str, Any]], datasets: Sequence[str]) -> str:
  """Text table: one row per stage (its target), mIoU per dataset and mean forgetting, in
  percentage points (the records' mIoUs are percentages).

  `datasets` are the columns, in order; a dataset a stage was not evaluated on shows '-'.
  """
  header = ['step', 'target'] + list(datasets) + ['forgetting']
  body = []
  for r in records:
    drops = forgetting(r, records)
    mean_drop = sum(drops.values()) / len(drops) if drops else None
    body.append([r['row'], str(r.get('target', '-'))] + [_cell(_miou(r).get(d)) for d in datasets]
                + [_cell(mean_drop)])
  widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
  line = lambda cells: ' '.join([cells[0].ljust(widths[0])] + [
      c.rjust(w) for c, w in zip(cells[1:], widths[1:])])
  return '\n'.join([line(header), '-' * len(line(header))] + [line(r) for r in body])
