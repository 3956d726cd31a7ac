"""The user's mistakes, told apart from the library's own failures.

`UserError` marks a problem in what the user gave (a config field, a dataset tree, a weights
directory, an image): its message is one line naming the key or file and what was expected. The
entry point prints that line and exits with status 2; any other exception is a bug in dakd-jax
and keeps its traceback. `UserError` subclasses `ValueError` (and `MissingPathError` also
`FileNotFoundError`), so callers that catch those keep working.
"""

EXIT_USER_ERROR = 2


class UserError(ValueError):
  """A mistake in the user's input; the message is one line naming the key or file."""


class MissingPathError(UserError, FileNotFoundError):
  """A file or directory the user pointed at (or the run needs) does not exist."""
