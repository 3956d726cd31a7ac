"""The user's mistakes, told apart from the library's own failures.

`UserError` marks a problem in what the user gave (a config field, a dataset tree, a weights
directory, an image, a disk without space): its message is one line naming the key or file and
what was expected. The entry point prints that line and exits with status 2; any other exception
is a bug in dakd-jax and keeps its traceback. `UserError` subclasses `ValueError` (and `MissingPathError` also
`FileNotFoundError`), so callers that catch those keep working.
"""

import errno

EXIT_USER_ERROR = 2
_NO_SPACE = ("No space left on device", "os_error_code='28'")


class UserError(ValueError):
  """A mistake in the user's input; the message is one line naming the key or file."""


class MissingPathError(UserError, FileNotFoundError):
  """A file or directory the user pointed at (or the run needs) does not exist."""


class DiskFullError(UserError):
  """The run's storage filled up; the message names the directory and what was kept."""


def is_disk_full(error: BaseException | None) -> bool:
  """Whether `error`, or an exception it was raised from, says the device has no space left.

  Orbax reports TensorStore's ENOSPC as `ValueError('RESOURCE_EXHAUSTED: ... No space left on
  device [os_error_code='28']')`, Python as `OSError(errno.ENOSPC)`.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if any(marker in str(error) for marker in _NO_SPACE):
      return True
    error = error.__cause__ or error.__context__
  return False
