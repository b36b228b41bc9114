"""The vocabulary of msp's config schema: what a key may hold (`Check`s) and what a key is (`Key`).

A check answers `problem(value)` with None when the value is allowed, else the words that follow
`config.KEY=VALUE` in a one-line error (" must be an integer ≥ 1", "; choose one of [...]"); `allowed` says the
same for a reader (docs/configuration.md) and `refused` is a value it refuses (the schema test sets every key to
it). The schema itself is in msp/train/config.py; task options are declared next to their task kinds
(msp/tasks/registry.py).
"""
import dataclasses
import math
import numbers
from typing import Any, Mapping, Sequence

REQUIRED = object()  # the default of a key every config must set itself (a dataset's name, a network's widths)


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Check:
  """What one key may hold; `optional` also allows None."""
  optional: bool = False

  def problem(self, value) -> str | None:
    if value is None:
      return None if self.optional else " must be set (it is None)"
    return self._problem(value)

  def _problem(self, value) -> str | None:  # pylint: disable=unused-argument
    return None  # the base check allows any value

  @property
  def allowed(self) -> str:
    return self._allowed + (", or None" if self.optional else "")

  _allowed = "any value"
  refused: Any = None


@dataclasses.dataclass(frozen=True)
class Int(Check):
  """An integer ≥ `minimum`."""
  minimum: int = 0
  optional: bool = False

  def _problem(self, value):
    return None if _is_int(value) and value >= self.minimum else f" must be an integer ≥ {self.minimum}"

  @property
  def _allowed(self):
    return f"integer ≥ {self.minimum}"

  @property
  def refused(self):
    return self.minimum - 1


@dataclasses.dataclass(frozen=True)
class Real(Check):
  """A finite number in the interval from `low` to `high` (None: unbounded), each end open or closed."""
  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  optional: bool = False

  @property
  def _allowed(self):
    if self.high is None:
      return "number " + (f"> {self.low:g}" if self.low_open else f"≥ {self.low:g}") if self.low is not None \
          else "finite number"
    if self.low_open and self.high_open:
      return f"number strictly between {self.low:g} and {self.high:g}"
    return f"number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

  def _problem(self, value):
    if not _is_real(value) or not math.isfinite(value):
      return f" must be a finite {self._allowed}" if _is_real(value) else f" must be a {self._allowed}"
    too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
    too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
    if not (too_low or too_high):
      return None
    if self.high is None:
      return f" must be {'>' if self.low_open else '≥'} {self.low:g}"
    if self.low_open and self.high_open:
      return f" must lie strictly between {self.low:g} and {self.high:g}"
    return f" must lie in {self._allowed.removeprefix('number in ')}"

  @property
  def refused(self):
    return self.low - 1.0 if self.low is not None else float("nan")


@dataclasses.dataclass(frozen=True)
class Choice(Check):
  """One of `options`."""
  options: tuple = ()
  optional: bool = False

  def _problem(self, value):
    return None if value in self.options else f"; choose one of {sorted(self.options)}"

  @property
  def _allowed(self):
    return " | ".join(f"`{o}`" for o in self.options)

  refused = "bogus"


@dataclasses.dataclass(frozen=True)
class Bool(Check):
  optional: bool = False
  _allowed = "True or False"
  refused = "yes"

  def _problem(self, value):
    return None if isinstance(value, bool) else " must be True or False"


@dataclasses.dataclass(frozen=True)
class Text(Check):
  """A non-empty string."""
  optional: bool = False
  _allowed = "a non-empty string"
  refused = 7

  def _problem(self, value):
    return None if isinstance(value, str) and value else " must be a non-empty string"


@dataclasses.dataclass(frozen=True)
class Ints(Check):
  """A sequence of integers ≥ `minimum` (non-empty unless `empty`)."""
  minimum: int = 0
  empty: bool = False
  optional: bool = False

  def _problem(self, value):
    ok = (isinstance(value, (list, tuple)) and (self.empty or len(value) > 0)
          and all(_is_int(v) and v >= self.minimum for v in value))
    return None if ok else f" must be a {'' if self.empty else 'non-empty '}sequence of integers ≥ {self.minimum}"

  @property
  def _allowed(self):
    return f"sequence of integers ≥ {self.minimum}"

  @property
  def refused(self):
    return (self.minimum - 1,)


@dataclasses.dataclass(frozen=True)
class Reals(Check):
  """A sequence of `length` numbers, each allowed by `each`, in non-decreasing order when `ordered`."""
  each: Real = Real()
  length: int = 2
  ordered: bool = False
  optional: bool = False

  def _problem(self, value):
    ok = (isinstance(value, (list, tuple)) and len(value) == self.length
          and all(self.each.problem(v) is None for v in value)
          and (not self.ordered or all(a <= b for a, b in zip(value, value[1:]))))
    return None if ok else f" must be {self._allowed}"

  @property
  def _allowed(self):
    return f"{self.length} {'non-decreasing ' if self.ordered else ''}numbers, each a {self.each.allowed}"

  @property
  def refused(self):
    return (self.each.refused,) * self.length


@dataclasses.dataclass(frozen=True)
class Names(Check):
  """A sequence of distinct non-empty strings (non-empty unless `empty`)."""
  empty: bool = False
  optional: bool = False
  refused = ("",)

  def _problem(self, value):
    ok = (isinstance(value, (list, tuple)) and (self.empty or len(value) > 0) and len(set(value)) == len(value)
          and all(isinstance(v, str) and v for v in value))
    return None if ok else f" must be a {'' if self.empty else 'non-empty '}sequence of distinct names"

  @property
  def _allowed(self):
    return "sequence of names"


@dataclasses.dataclass(frozen=True)
class Table(Check):
  """A mapping whose keys each `keys` allows and whose values each `values` allows."""
  keys: Check = Text()
  values: Check = Check()

  def _problem(self, value):
    if not isinstance(value, Mapping):
      return " must be a mapping"
    for key, entry in value.items():
      if self.keys.problem(key) is not None or self.values.problem(entry) is not None:
        return f" has the entry {key!r}: {entry!r}; keys: {self.keys.allowed}, values: {self.values.allowed}"
    return None

  @property
  def _allowed(self):
    return f"mapping {self.keys.allowed} → {self.values.allowed}"

  @property
  def refused(self):
    return {"": self.values.refused}


@dataclasses.dataclass(frozen=True)
class Pairs(Check):
  """A sequence of [name, integer ≥ 1] pairs (a pruned network's conv widths)."""
  _allowed = "sequence of [conv path, width ≥ 1] pairs"
  refused = (("conv", 0),)

  def _problem(self, value):
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str) and _is_int(p[1]) and p[1] >= 1
        for p in value)
    return None if ok else f" must be a {self._allowed}"


@dataclasses.dataclass(frozen=True)
class Key:
  """One config key: its default (REQUIRED: set by every config itself; a key with another default is filled in by
  `msp.train.config.defaults`), what it may hold, what it means, and whether a resumed run may change it (`resume`:
  it shapes neither the state nor its meaning) or, for `required=False`, whether a config may leave it out."""
  default: Any
  check: Check
  help: str
  resume: bool = False
  required: bool = True


def describe_default(default) -> str:
  """How docs/configuration.md shows a default."""
  if default is REQUIRED:
    return "(set by the config)"
  if isinstance(default, Sequence) and not isinstance(default, str):
    return repr(tuple(default))
  return repr(default)
