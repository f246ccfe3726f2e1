"""YAML reading/writing and ``_base_`` inheritance for config files.

A config file is a YAML mapping. ``_base_`` (a path or a list of paths, relative to the
including file) names files that are loaded first and deep-merged left to right; the
including file is then merged on top:

* mappings are merged key by key, recursively;
* every other value (scalars, lists, ``null``) replaces the base value -- lists are never
  concatenated;
* a mapping containing ``_delete_: true`` replaces the base mapping instead of merging.

While merging, the file that set every key is remembered (the *origins* map), so that
validation errors can name the file a bad key came from rather than the top-level file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"

KeyPath = tuple[str, ...]
Origins = dict[KeyPath, str]

# YAML 1.1 (PyYAML) reads ``1e-4`` and ``1.0e5`` as strings; research configs are full of
# such learning rates, so floats with an exponent but no dot/sign are accepted too.
_EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader + exponent floats + an error on duplicate keys in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: let the base class report it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes strings :class:`_Loader` would read back as floats."""


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))


def parse_value(text: str) -> Any:
    """Parse one override value (``"100"``, ``"[64, 64]"``, ``"null"``, ``"1e-4"``) as YAML."""
    return yaml.load(text, Loader=_Loader)


def dump_yaml(data: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``data`` (plain dicts/lists/scalars) to ``path`` as block-style YAML."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.dump(dict(data), f, Dumper=_Dumper, sort_keys=False, default_flow_style=None)


def read_yaml(path: str) -> dict[str, Any]:
    """Read one YAML file that must hold a mapping (an empty file gives ``{}``)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_Loader)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read config file ({e.strerror})"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: invalid YAML: {e}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: top level must be a mapping, got {type(data).__name__}"])
    return data


def _drop_origins(origins: Origins, path: KeyPath) -> None:
    for key in [k for k in origins if k[: len(path)] == path]:
        del origins[key]


def merge_into(base: Mapping[str, Any], child: Mapping[str, Any], origins: Origins,
               child_origins: Mapping[KeyPath, str], child_source: str,
               prefix: KeyPath = ()) -> dict[str, Any]:
    """Deep-merge ``child`` on top of ``base``; return a new dict (inputs are not modified).

    Args:
        base: The mapping being overridden.
        child: The overriding mapping (may contain ``_delete_`` markers at any depth).
        origins: Origins of ``base``'s keys; updated in place for the keys ``child`` sets.
        child_origins: Known origins of ``child``'s keys (e.g. when ``child`` is itself a
            merged base file); keys missing here are attributed to ``child_source``.
        child_source: Display name of the file (or override) ``child`` came from.
        prefix: Key path of ``base``/``child`` inside the whole config.

    Returns:
        The merged mapping, with every ``_delete_`` marker removed.
    """
    out = dict(base)
    for key, value in child.items():
        path = prefix + (key,)
        source = child_origins.get(path, child_source)
        if isinstance(value, dict):
            value = dict(value)
            delete = value.pop(DELETE_KEY, False)
            if not isinstance(delete, bool):
                raise ConfigError([f"{source}: '{'.'.join(map(str, path))}.{DELETE_KEY}' "
                                   f"must be true or false, got {delete!r}"])
            if delete or not isinstance(out.get(key), dict):
                _drop_origins(origins, path)
                out[key] = {}
            origins.setdefault(path, source)
            out[key] = merge_into(out[key], value, origins, child_origins, child_source, path)
        else:
            _drop_origins(origins, path)
            out[key] = value
            origins[path] = source
    return out


def _base_list(raw: Any, path: str) -> list[str]:
    bases = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(b, str) and b for b in bases):
        raise ConfigError([f"{path}: '{BASE_KEY}' must be a path or a list of paths, got {raw!r}"])
    return bases


def load_tree(path: str | os.PathLike) -> tuple[dict[str, Any], Origins]:
    """Load a config file and all its ``_base_`` files into one merged plain dict.

    Args:
        path: The config file. Error messages name files relative to the same directory
            the caller used for ``path``.

    Returns:
        ``(tree, origins)``: the merged mapping (no ``_base_`` or ``_delete_`` keys left) and
        the file that set each key path.

    Raises:
        ConfigError: unreadable/invalid files, missing base files, or an inheritance cycle.
    """
    return _load(os.path.normpath(os.fspath(path)), chain=())


def _load(path: str, chain: tuple[tuple[str, str], ...]) -> tuple[dict[str, Any], Origins]:
    real = os.path.realpath(path)
    if any(real == r for r, _ in chain):
        names = [shown for _, shown in chain] + [path]
        start = next(i for i, (r, _) in enumerate(chain) if r == real)
        raise ConfigError([f"{path}: cyclic {BASE_KEY} inheritance: "
                           + " -> ".join(names[start:])])
    raw = read_yaml(path)
    bases = _base_list(raw.pop(BASE_KEY), path) if BASE_KEY in raw else []
    tree: dict[str, Any] = {}
    origins: Origins = {}
    for base in bases:
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
        if not os.path.isfile(base_path):
            raise ConfigError([f"{path}: {BASE_KEY} file '{base}' not found "
                               f"(looked for {base_path})"])
        base_tree, base_origins = _load(base_path, chain + ((real, path),))
        tree = merge_into(tree, base_tree, origins, base_origins, base_path)
    tree = merge_into(tree, raw, origins, {}, path)
    return tree, origins
