"""Typed, schema-validated YAML configs with ``_base_`` inheritance and dotted overrides.

Typical use::

    cfg = load_config("configs/quickstart.yaml", ["train.iters=100", "data.crop_size=[64,64]"])
    cfg.train.iters                      # 100 -- attribute access, typed
    save_config(cfg, "work_dirs/x/config.yaml")

See ``docs/configs.md`` for the rules and the full key table.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Mapping, Sequence

from .errors import ConfigError
from .schema import (CELossConfig, Config, DataConfig, LossConfig, MethodConfig, ModelConfig,
                     OptimConfig, SchedConfig, SyntheticConfig, TestConfig, TrainConfig)
from .typed import all_keys, build, check_key
from .yaml_io import Origins, dump_yaml, load_tree, merge_into, parse_value

__all__ = [
    "ConfigError", "Config", "DataConfig", "SyntheticConfig", "ModelConfig", "MethodConfig",
    "LossConfig", "CELossConfig", "OptimConfig", "SchedConfig", "TrainConfig", "TestConfig",
    "load_config", "config_from_dict", "config_to_dict", "save_config", "apply_overrides",
    "get_by_dotted", "set_by_dotted", "validate_dotted_key", "schema_keys",
]


def validate_dotted_key(key: str, schema: type = Config, source: str | None = None) -> Any:
    """Check that ``key`` (e.g. ``"optim.lr"``) exists in the schema, without loading a file.

    Args:
        key: Dotted key; may name a section (``"loss.ce"``) or a value.
        schema: Root dataclass of the schema.
        source: Prefix for the error message (e.g. the sweep file); none when ``None``.

    Returns:
        The schema type of the key (e.g. ``float``).

    Raises:
        ConfigError: ``unknown key 'optim.lrr' (did you mean 'optim.lr'?)``.
    """
    return check_key(schema, key, source)


def schema_keys(schema: type = Config) -> list[str]:
    """Every dotted key of the schema (sections included), in declaration order."""
    return list(all_keys(schema))


def set_by_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    """Set ``d["a"]["b"]["c"] = value`` for ``key="a.b.c"``, creating missing mappings.

    Works on plain dicts (e.g. from :func:`config_to_dict`); no schema check -- call
    :func:`validate_dotted_key` first, and :func:`config_from_dict` after, to validate.

    Raises:
        ConfigError: if a prefix of ``key`` holds a non-mapping value.
    """
    parts = key.split(".")
    node = d
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError([f"cannot set '{key}': '{'.'.join(parts[:i + 1])}' holds "
                               f"{child!r}, not a mapping"])
        node = child
    node[parts[-1]] = value


def get_by_dotted(cfg: Any, key: str) -> Any:
    """Read ``cfg.a.b`` (dataclass config) or ``cfg["a"]["b"]`` (plain dict) for ``key="a.b"``.

    Raises:
        ConfigError: unknown key of a dataclass config (did-you-mean message).
        KeyError: missing key of a plain dict.
    """
    if dataclasses.is_dataclass(cfg):
        validate_dotted_key(key, type(cfg))
    node = cfg
    for part in key.split("."):
        if dataclasses.is_dataclass(node):
            node = getattr(node, part)
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            raise KeyError(key)
    return node


def _apply(tree: dict[str, Any], overrides: Sequence[str], origins: Origins,
           schema: type) -> dict[str, Any]:
    for item in overrides:
        source = f"override '{item}'"
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError([f"{source}: expected KEY=VALUE"])
        validate_dotted_key(key, schema, source)
        nested: dict[str, Any] = {}
        set_by_dotted(nested, key, parse_value(text))
        tree = merge_into(tree, nested, origins, {}, source)
    return tree


def apply_overrides(cfg_dict: Mapping[str, Any], overrides: Sequence[str],
                    schema: type = Config) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides to a plain config dict; return a new dict.

    Values are parsed as YAML (``100`` -> int, ``[64,64]`` -> list, ``null`` -> None,
    ``1e-4`` -> float, anything else -> str). A mapping value is deep-merged like a
    ``_base_`` file (``_delete_: true`` replaces instead); other values replace.

    Args:
        cfg_dict: Plain nested dict (e.g. a loaded YAML tree or :func:`config_to_dict`).
        overrides: Items like ``"train.iters=100"``, applied in order.
        schema: Root dataclass used to reject unknown keys.

    Raises:
        ConfigError: malformed item or unknown key (did-you-mean message).
    """
    return _apply(copy.deepcopy(dict(cfg_dict)), overrides, {}, schema)


def config_from_dict(d: Mapping[str, Any], source: str = "<dict>",
                     schema: type = Config) -> Any:
    """Validate a plain nested dict and convert it to the schema dataclass.

    Missing keys take the dataclass defaults.

    Raises:
        ConfigError: every unknown key, type error and failed value check, each line
            prefixed with ``source``.
    """
    return build(schema, d, source)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = (),
                schema: type = Config) -> Any:
    """Load a YAML config (resolving ``_base_``), apply overrides, validate.

    Args:
        path: The config file.
        overrides: ``KEY=VALUE`` items (``--cfg-options``), applied after all files.
        schema: Root dataclass (default :class:`Config`).

    Returns:
        The validated config, e.g. ``cfg.optim.lr``.

    Raises:
        ConfigError: naming, for each problem, the file (or override) that set the key.
    """
    tree, origins = load_tree(path)
    tree = _apply(tree, overrides, origins, schema)
    return build(schema, tree, os.path.normpath(os.fspath(path)), origins)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts/lists/scalars (tuples become lists)."""
    return _plain(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the fully resolved config as YAML; :func:`load_config` on it gives an equal config."""
    dump_yaml(config_to_dict(cfg), path)
