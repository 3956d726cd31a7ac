"""Method registry: every method is one module here, registered by its `name`.

`create(name, options)` builds a method from a stage's options (a mapping; nested mappings with a
`method` key build nested methods, e.g. DAKD's `adaptation`), `default_options(name)` gives the
official values that a config starts from. Adding a method: write its module (a `base.Method`
dataclass whose fields are its options) and add its class to `_CLASSES`.
"""

import dataclasses
from typing import Any, Mapping

from dakd_jax import errors
from dakd_jax.methods.adaptsegnet import AdaptSegNet
from dakd_jax.methods.advent import Advent
from dakd_jax.methods.base import FrozenNetwork, Method, Player
from dakd_jax.methods.dakd import DAKD
from dakd_jax.methods.diga import DiGAWarmUp
from dakd_jax.methods.diga_selftrain import DiGASelfTraining
from dakd_jax.methods.diga_translator import DiGATranslatorTraining
from dakd_jax.methods.minent import MinEnt
from dakd_jax.methods.muhdi import MuHDi
from dakd_jax.methods.skd import SKD
from dakd_jax.methods.source_only import SourceOnly

_CLASSES = (SourceOnly, AdaptSegNet, Advent, MinEnt, DAKD, SKD, DiGATranslatorTraining, DiGAWarmUp,
            DiGASelfTraining, MuHDi)
METHODS: dict[str, type[Method]] = {cls.name: cls for cls in _CLASSES}
METHOD_KEY = 'method'  # Names the method of a nested options mapping.

__all__ = ['METHODS', 'FrozenNetwork', 'Method', 'Player', 'create', 'default_options']


def _method_class(name: str, key: str) -> type[Method]:
  if name not in METHODS:
    raise errors.UserError(f'{key}: unknown method {name!r}; valid: {", ".join(METHODS)}')
  return METHODS[name]


def default_options(name: str) -> dict[str, Any]:
  """The options of method `name` with their defaults (nested methods as nested dicts)."""
  return options_of(_method_class(name, 'method')())


def options_of(method: Method) -> dict[str, Any]:
  """The options a method was built from (`create(method.name, options_of(m)) == m`)."""
  options = {}
  for field in dataclasses.fields(method):
    value = getattr(method, field.name)
    options[field.name] = ({METHOD_KEY: value.name, **options_of(value)}
                           if isinstance(value, Method) else value)
  return options


def create(name: str, options: Mapping[str, Any], key: str = 'options',
           method_key: str = 'method') -> Method:
  """Builds method `name` from `options`; errors name the config key (`key`, `method_key`).

  Unknown options, wrong nested methods and invalid values raise a one-line ValueError.
  """
  cls = _method_class(name, method_key)
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  unknown = sorted(set(options) - set(fields))
  if unknown:
    raise errors.UserError(
        f'{key}: unknown option(s) {unknown} for method {name!r}; valid: {", ".join(fields)} (a '
        'config switching a stage to a method with other options sets them with '
        'dakd_jax.config.set_method)')
  kwargs = {}
  for option, value in options.items():
    default = fields[option].default
    if isinstance(default, Method):
      nested = dict(value)
      kwargs[option] = create(nested.pop(METHOD_KEY, default.name), nested,
                              key=f'{key}.{option}', method_key=f'{key}.{option}.{METHOD_KEY}')
    else:
      kwargs[option] = tuple(value) if isinstance(value, list) else value
  try:
    return cls(**kwargs)
  except ValueError as e:
    raise errors.UserError(f'{key}.{e}') from None
