"""Search-space files: dotted config keys mapped to distributions. Needs no Ray.

A space file is YAML keyed by the keys that ``--cfg-options`` takes::

    loss.contrast.temperature: {loguniform: [0.03, 0.5]}
    loss.contrast.memory_size: {quniform: [250, 1000, 250]}
    loss.contrast.sampling: {choice: [all, hardest]}

:func:`load_space` checks every key against the config schema (did-you-mean on a typo) and every
distribution with its arguments; :meth:`SearchSpace.check_against` then builds the config once at
each bound and each choice, so a value the schema rejects fails before any trial starts.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from segproto.config import ConfigError, config_from_dict, get_by_dotted, set_by_dotted, validate_dotted_key
from segproto.config.fit import fraction_to_iteration, term_starts
from segproto.config.yaml_io import read_yaml

#: distribution name -> its arguments (docs/sweeps.md explains each).
DISTRIBUTIONS = {
    "uniform": "[low, high]",
    "loguniform": "[low, high] with low > 0",
    "quniform": "[low, high, q]",
    "randint": "[low, high] (integers, both included)",
    "choice": "[value, ...] (null, bool, number or string items)",
}
_SCALARS = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Param:
    """One swept key.

    Attributes:
        key: Dotted config key, e.g. ``"loss.contrast.temperature"``.
        kind: A key of :data:`DISTRIBUTIONS`.
        args: ``(low, high)``, ``(low, high, q)`` or the choices.
        integer: The key's schema type is ``int`` (``quniform`` then samples integers).
    """

    key: str
    kind: str
    args: tuple
    integer: bool = False

    def edge_values(self) -> list:
        """What a sample can be at the edges of the distribution: both bounds, or every choice."""
        return list(self.args) if self.kind == "choice" else list(self.args[:2])


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of one space file, in file order."""

    path: str
    params: tuple[Param, ...]

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def check_against(self, base: Mapping[str, Any]) -> None:
        """Builds the config ``base`` (a plain dict) once per edge value of every parameter.

        Raises:
            ConfigError: one line per rejected value, naming the space file, key and value.
        """
        errors: list[str] = []
        for p in self.params:
            for value in p.edge_values():
                try:
                    config_from_dict(apply_params(base, {p.key: value}), f"{self.path} ({p.kind} value {value!r})")
                except ConfigError as exc:
                    errors += exc.errors
        if errors:
            raise ConfigError(errors)


def load_space(path: str) -> SearchSpace:
    """Reads and checks a space file (keys against the schema, distributions and their arguments).

    Raises:
        ConfigError: every problem, one line each, prefixed with the file and naming the key.
    """
    raw = read_yaml(str(path))
    if not raw:
        raise ConfigError([f"{path}: no parameters; expected lines like 'loss.contrast.temperature: "
                           "{loguniform: [0.03, 0.5]}'"])
    params, errors = [], []
    for key, spec in raw.items():
        try:
            params.append(parse_param(str(key), spec))
        except ConfigError as exc:
            errors += [f"{path}: {e}" for e in exc.errors]
    if errors:
        raise ConfigError(errors)
    return SearchSpace(str(path), tuple(params))


def parse_param(key: str, spec: Any) -> Param:
    """``key`` and its ``{distribution: arguments}`` mapping as a checked :class:`Param`.

    Raises:
        ConfigError: unknown key (did-you-mean), a section instead of a value, an unknown
            distribution (did-you-mean) or bad arguments; the message names the key.
    """
    tp = validate_dotted_key(key)
    if dataclasses.is_dataclass(tp):
        raise ConfigError([f"key '{key}' is a section; sweep its values (e.g. '{key}.<name>')"])
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError([f"key '{key}': expected one {{distribution: arguments}} mapping such as "
                           f"{{loguniform: [0.03, 0.5]}}, got {spec!r}"])
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        close = difflib.get_close_matches(str(kind), DISTRIBUTIONS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError([f"key '{key}': unknown distribution '{kind}'{hint}; "
                           f"supported: {', '.join(DISTRIBUTIONS)}"])
    integer = tp is int or tp == Optional[int]
    problem = _args_problem(kind, args, integer)
    if problem:
        raise ConfigError([f"key '{key}': {kind} expects {DISTRIBUTIONS[kind]}, got {args!r}: {problem}"])
    return Param(key, kind, tuple(args), integer)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _args_problem(kind: str, args: Any, integer: bool) -> Optional[str]:
    """Why ``args`` do not fit distribution ``kind`` (``None`` when they do)."""
    if not isinstance(args, list) or not args:
        return "not a non-empty list"
    if kind == "choice":
        if not all(isinstance(v, _SCALARS) for v in args):
            return "items must be null, bool, number or string (the searcher needs scalars)"
        return "duplicate items" if len({(type(v), v) for v in args}) != len(args) else None
    n = 3 if kind == "quniform" else 2
    if len(args) != n or not all(_is_number(v) for v in args):
        return f"needs {n} finite numbers"
    low, high = args[:2]
    if not low < high:
        return "low must be < high"
    if kind in ("uniform", "loguniform") and integer:
        return "the key is an int and this distribution samples floats; use randint, quniform or choice"
    if kind == "loguniform" and low <= 0:
        return "low must be > 0"
    if kind == "randint" and not all(isinstance(v, int) for v in args):
        return "bounds must be integers"
    if kind == "quniform":
        return _quniform_problem(low, high, args[2], integer)
    return None


def _quniform_problem(low: float, high: float, q: float, integer: bool) -> Optional[str]:
    if q <= 0:
        return "q must be > 0"
    if integer and not all(isinstance(v, int) for v in (low, high, q)):
        return "the key is an int: low, high and q must be integers"
    steps = (high - low) / q
    return None if abs(steps - round(steps)) < 1e-9 * max(1.0, steps) else "high - low must be a multiple of q"


def plain_value(value: Any) -> Any:
    """A searcher's sample as the Python scalar the schema expects (NumPy scalars -> int/float/...)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, _SCALARS) else value


def apply_params(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the plain config dict ``base`` with each dotted key of ``values`` set."""
    out = copy.deepcopy(dict(base))
    for key, value in values.items():
        set_by_dotted(out, key, plain_value(value))
    return out


def latest_start(space: SearchSpace, base: Mapping[str, Any], key: str, unit: str) -> tuple[int, bool]:
    """The latest iteration at which the term of ``key`` can switch on in a trial of ``space``
    (the largest value the space gives ``key``, else the config's), and whether ``key`` is swept."""
    iters = base["train"]["iters"]
    param = next((p for p in space.params if p.key == key), None)
    values = param.edge_values() if param is not None else [get_by_dotted(base, key)]
    top = max(float(v) for v in values)
    start = fraction_to_iteration(top, iters) if unit == "fraction" else int(top)
    return min(start, iters), param is not None


def first_rung_problems(space: SearchSpace, base: Mapping[str, Any], grace_period: int) -> tuple[list[str], list[str]]:
    """What is wrong with ASHA's first rung for the method terms of ``base`` (a plain config dict;
    the terms' start keys are :func:`segproto.config.fit.term_starts`).

    The rung is the first evaluation at or after ``grace_period`` (ASHA records a trial at its first
    report past a milestone). A trial whose terms all start at or after the rung reaches it having
    trained the same plain CE as every other such trial, so the rung ranks them by a tie-break and
    stops some for nothing: an error. A single term that can start at or after the rung (others on
    before it) makes the rung judge such trials without that term: a warning.

    Returns:
        ``(errors, warnings)``, one line each, naming the key, its latest start and the rung.
    """
    starts = term_starts(base["method"]["name"])
    if not starts:
        return [], []
    iters, every = base["train"]["iters"], base["train"]["eval_interval"]
    rung = min(iters, -(-grace_period // every) * every)
    latest = [(key, *latest_start(space, base, key, unit)) for key, unit in starts]
    where = lambda key, swept: f"in {space.path}" if swept else "in the config"  # noqa: E731
    fix = "give --grace-period above the latest start, narrow the space, or use --scheduler fifo"
    # Keys are independent in the space, so the latest moment at which a trial can still have no term
    # on is the earliest of the keys' latest starts.
    first = min(latest, key=lambda t: t[1])
    if first[1] >= rung:
        return [f"ASHA's first rung (iteration {rung}, from --grace-period {grace_period} and train.eval_interval "
                f"{every}) comes before any term of method {base['method']['name']} can have started: "
                f"{first[0]} reaches iteration {first[1]} {where(first[0], first[2])}, so trials reach the rung "
                f"as identical CE runs and ASHA stops them by tie-break; {fix}"], []
    return [], [f"{key} can start at iteration {start} ({where(key, swept)}), at or after ASHA's first rung "
                f"(iteration {rung}): the rung ranks such trials before that term acts; {fix}"
                for key, start, swept in latest if start >= rung]
