"""Command-line conventions of the deployment tools (`predict`, `export`, `profile_model`).

Bad user input (a missing path, a malformed size, an unusable model directory) is one line on
stderr, `<prog>: error: <what was wrong, naming the path, and what was expected>`, and exit
status 2, never a traceback.
"""

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

from dakd_jax import errors
from dakd_jax import models
from dakd_jax import networks as networks_lib

# Variables directories hold segmentation networks or discriminators; these tools need the former.
SEGMENTATION_ARCHS = models.SEGMENTATION_NETWORKS
_MODEL_DIR = ("a variables directory (model.json and variables/, written by a finished stage's "
              "export/ or by python -m dakd_jax.tools.convert)")


class Parser(argparse.ArgumentParser):
  """An ArgumentParser whose errors are `errors.UserError`s (one line), not usage + message."""

  def error(self, message):
    raise errors.UserError(message)


def run(main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
        argv: Optional[Sequence[str]]) -> int:
  """Parses `argv` and calls `main(args)`; an `errors.UserError` becomes one stderr line and
  status 2."""
  try:
    return main(parser.parse_args(argv))
  except errors.UserError as e:
    print(f'{parser.prog}: error: {e}', file=sys.stderr)
    return errors.EXIT_USER_ERROR


def size(text: str) -> tuple[int, int]:
  """argparse type of an `H,W` size of positive integers."""
  try:
    h, w = (int(v) for v in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r}: expected H,W (two positive integers)') from None
  if h < 1 or w < 1:
    raise argparse.ArgumentTypeError(f'{text!r}: expected H,W (two positive integers)')
  return h, w


def model_spec(directory: str) -> dict:
  """The spec (`model.json`) of the segmentation network in `directory`, or a `UserError`."""
  if not os.path.isdir(directory):
    raise errors.UserError(f'--model {directory}: no such directory; expected {_MODEL_DIR}')
  if not os.path.isfile(os.path.join(directory, networks_lib.MODEL_FILE)):
    raise errors.UserError(
        f'--model {directory}: no {networks_lib.MODEL_FILE}; expected {_MODEL_DIR}')
  try:
    spec = networks_lib.read_model_spec(directory)
  except ValueError as e:  # json.JSONDecodeError
    raise errors.UserError(
        f'--model {directory}: unreadable {networks_lib.MODEL_FILE} ({e})') from None
  if spec.get('arch') not in SEGMENTATION_ARCHS:
    raise errors.UserError(f'--model {directory}: holds a {spec.get("arch")!r}; expected a '
                           f'segmentation network ({", ".join(SEGMENTATION_ARCHS)})')
  return spec
