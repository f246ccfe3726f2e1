"""Generic conversion of plain dicts into nested dataclasses, with precise error messages.

Nothing here knows the segproto schema: any tree of ``@dataclass`` classes whose field types
are built from ``bool``, ``int``, ``float``, ``str``, ``None``, ``Any``, ``Optional``/``Union``,
``Literal``, ``list[T]``, ``tuple[T, ...]``, fixed ``tuple[T1, T2]``, ``dict[str, T]`` and other
dataclasses is supported. Adding a section is adding a field.

Rules: ``bool`` is never accepted where a number is expected; ``int`` is accepted (and
converted) where a ``float`` is expected; YAML lists become tuples for tuple fields; a
``null`` section means "all defaults"; a dataclass may define ``check(self)`` returning
``(relative dotted key, message)`` pairs for semantic checks, which run after all types are
valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
from typing import Any, Iterable, Iterator, Literal, Mapping, Union, get_args, get_origin, \
    get_type_hints

from .errors import ConfigError

PathT = tuple[Union[str, int], ...]
_INVALID = object()  # returned by converters after reporting an error


def format_key(path: Iterable[str | int]) -> str:
    """``("data", "palette", 0, 1)`` -> ``"data.palette[0][1]"``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """Resolved field types of a dataclass, in declaration order (init fields only)."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _strip_optional(tp: Any) -> Any:
    """``Optional[X]`` -> ``X``; any other type unchanged."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_mapping_type(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) or get_origin(tp) in (dict, Mapping)


def type_name(tp: Any) -> str:
    """Human-readable schema type: ``float or null``, ``one of 'sgd', 'adamw'``, ..."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    if dataclasses.is_dataclass(tp):
        return "a mapping (section)"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else "")
    if origin in (list, tuple, dict):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if args else origin.__name__
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


class _Ctx:
    """Error collector: attributes each error to the file that set the key."""

    def __init__(self, root: type, source: str, origins: Mapping[tuple[str, ...], str]):
        self.root, self.source, self.origins = root, source, origins
        self.errors: list[str] = []

    def where(self, path: PathT) -> str:
        keys = tuple(p for p in path if isinstance(p, str)) if path else ()
        for n in range(len(keys), 0, -1):
            if keys[:n] in self.origins:
                return self.origins[keys[:n]]
        return self.source

    def error(self, path: PathT, message: str) -> None:
        self.errors.append(f"{self.where(path)}: {message}")

    def type_error(self, path: PathT, tp: Any, value: Any, extra: str = "",
                   hint: str = "") -> object:
        self.error(path, f"key '{format_key(path)}' expects {type_name(tp)}{extra}, "
                         f"got {_show(value)}{hint}")
        return _INVALID


def all_keys(cls: type, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a schema, sections included, depth first."""
    for name, tp in field_types(cls).items():
        key = f"{prefix}{name}"
        yield key
        inner = _strip_optional(tp)
        if dataclasses.is_dataclass(inner):
            yield from all_keys(inner, key + ".")


def unknown_key_message(root: type, parent: str, name: str, valid: Iterable[str]) -> str:
    """``unknown key 'a.b' (did you mean 'a.c'?)`` with the best suggestion available."""
    full = f"{parent}.{name}" if parent else name
    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean '{parent + '.' if parent else ''}{close[0]}'?"
    else:
        # Elsewhere in the schema: the same name in another section (``train.lr`` ->
        # ``optim.lr``), else a close full key outside this section.
        everywhere = [k for k in all_keys(root) if k.rpartition(".")[0] != parent]
        same_leaf = [k for k in everywhere if k.rsplit(".", 1)[-1] == name]
        close = same_leaf[:1] or difflib.get_close_matches(full, everywhere, n=1, cutoff=0.6)
        hint = (f"did you mean '{close[0]}'?" if close
                else "valid keys here: " + ", ".join(valid))
    return f"unknown key '{full}' ({hint})"


def _convert_section(cls: type, value: Any, path: PathT, ctx: _Ctx) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        return ctx.type_error(path, cls, value)
    types_ = field_types(cls)
    n_errors = len(ctx.errors)
    kwargs = {}
    for key, item in value.items():
        if key not in types_:
            ctx.error(path + (str(key),), unknown_key_message(
                ctx.root, format_key(path), str(key), types_))
            continue
        converted = convert(types_[key], item, path + (key,), ctx)
        if converted is not _INVALID:
            kwargs[key] = converted
    return cls(**kwargs) if len(ctx.errors) == n_errors else _INVALID


def _convert_union(tp: Any, value: Any, path: PathT, ctx: _Ctx) -> Any:
    args = get_args(tp)
    if value is None and type(None) in args:
        return None
    arms = [a for a in args if a is not type(None)]
    for arm in arms:
        trial = _Ctx(ctx.root, ctx.source, ctx.origins)
        out = convert(arm, value, path, trial)
        if not trial.errors:
            return out
    # One container arm and a container value: report the precise nested problem.
    if len(arms) == 1 and get_origin(arms[0]) in (list, tuple) and isinstance(value, (list, tuple)):
        return convert(arms[0], value, path, ctx)
    if len(arms) == 1 and _is_mapping_type(arms[0]) and isinstance(value, Mapping):
        return convert(arms[0], value, path, ctx)
    return ctx.type_error(path, tp, value)


def _convert_sequence(tp: Any, value: Any, path: PathT, ctx: _Ctx) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if not isinstance(value, (list, tuple)):
        return ctx.type_error(path, tp, value)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            return ctx.type_error(path, tp, value, f" (exactly {len(args)} items)")
        item_types = list(args)
    else:
        item_types = [args[0] if args else Any] * len(value)
    n_errors = len(ctx.errors)
    items = [convert(t, v, path + (i,), ctx) for i, (t, v) in enumerate(zip(item_types, value))]
    if len(ctx.errors) != n_errors:
        return _INVALID
    return tuple(items) if origin is tuple else items


def _convert_dict(tp: Any, value: Any, path: PathT, ctx: _Ctx) -> Any:
    args = get_args(tp)
    value_type = args[1] if args else Any
    if not isinstance(value, Mapping):
        return ctx.type_error(path, tp, value)
    n_errors = len(ctx.errors)
    out = {}
    for key, item in value.items():
        if not isinstance(key, str):
            ctx.error(path, f"key '{format_key(path)}' needs string keys, got {_show(key)}")
            continue
        out[key] = convert(value_type, item, path + (key,), ctx)
    return out if len(ctx.errors) == n_errors else _INVALID


def _convert_scalar(tp: Any, value: Any, path: PathT, ctx: _Ctx) -> Any:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str or tp is type(None):
        ok = isinstance(value, tp)
    else:
        raise TypeError(f"unsupported schema type {tp!r} at '{format_key(path)}'")
    return value if ok else ctx.type_error(path, tp, value)


def convert(tp: Any, value: Any, path: PathT, ctx: _Ctx) -> Any:
    """Check ``value`` against schema type ``tp``; return the typed value or ``_INVALID``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _convert_section(tp, value, path, ctx)
    if origin in (Union, types.UnionType):
        return _convert_union(tp, value, path, ctx)
    if origin is Literal:
        choices = get_args(tp)
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        close = difflib.get_close_matches(value, [c for c in choices if isinstance(c, str)],
                                          n=1) if isinstance(value, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ctx.type_error(path, tp, value, hint=hint)
    if origin in (list, tuple):
        return _convert_sequence(tp, value, path, ctx)
    if origin in (dict, Mapping):
        return _convert_dict(tp, value, path, ctx)
    return _convert_scalar(tp, value, path, ctx)


def _semantic_issues(obj: Any, prefix: str) -> Iterator[tuple[str, str]]:
    """``(full dotted key, message)`` from every ``check()`` in a converted tree."""
    if not dataclasses.is_dataclass(obj):
        return
    check = getattr(obj, "check", None)
    if callable(check):
        for key, message in check():
            yield f"{prefix}{key}", message
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        children = value.items() if isinstance(value, dict) else [("", value)]
        for sub, child in children:
            yield from _semantic_issues(child, f"{prefix}{f.name}{'.' + sub if sub else ''}.")


def build(root: type, data: Mapping[str, Any], source: str,
          origins: Mapping[tuple[str, ...], str] | None = None) -> Any:
    """Convert a plain dict into ``root`` (a dataclass), then run the semantic checks.

    Args:
        root: The root schema dataclass.
        data: Plain mapping (e.g. a merged YAML tree).
        source: Name used in messages for keys with no recorded origin.
        origins: The file that set each key path (from :func:`load_tree`).

    Returns:
        An instance of ``root``.

    Raises:
        ConfigError: listing every unknown key, type error, or (if types are valid) every
            failed semantic check.
    """
    ctx = _Ctx(root, source, origins or {})
    cfg = convert(root, data, (), ctx)
    if not ctx.errors:
        for key, message in _semantic_issues(cfg, ""):
            ctx.error(tuple(key.split(".")), f"key '{key}' {message}")
    if ctx.errors:
        raise ConfigError(ctx.errors)
    return cfg


def check_key(root: type, key: str, source: str | None = None) -> Any:
    """Check that dotted ``key`` names a field of schema ``root``; return its schema type.

    Keys may descend into sections and into free-form ``dict[str, ...]`` fields, but not
    into plain values (``data.crop_size.0`` is rejected: set ``data.crop_size`` whole).

    Raises:
        ConfigError: with a did-you-mean message, prefixed by ``source`` when given.
    """
    def fail(message: str) -> ConfigError:
        return ConfigError([f"{source}: {message}" if source else message])

    parts = key.split(".")
    if not all(parts):
        raise fail(f"malformed key '{key}'")
    tp: Any = root
    for i, part in enumerate(parts):
        inner = _strip_optional(tp)
        parent = ".".join(parts[:i])
        if dataclasses.is_dataclass(inner):
            types_ = field_types(inner)
            if part not in types_:
                raise fail(unknown_key_message(root, parent, part, types_))
            tp = types_[part]
        elif get_origin(inner) in (dict, Mapping):
            args = get_args(inner)
            tp = args[1] if args else Any
        elif inner is Any:
            return Any
        else:
            raise fail(f"key '{key}' goes inside '{parent}', which holds "
                       f"{type_name(tp)}, not a section")
    return tp
