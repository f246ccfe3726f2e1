"""Class taxonomies: ordered label levels with a parent for every class.

Levels are ordered **finest first**: level 0 holds the classes a segmenter predicts (the
label ids stored in the annotation PNGs), level ``L - 1`` the coarsest grouping. Every class
of level ``l < L - 1`` has exactly one parent in level ``l + 1``; the coarsest level has none.

YAML format (``parent`` may be the parent's name or its integer id)::

    levels:
      - name: fine
        classes:
          - {id: 0, name: road, parent: flat}
          - {id: 1, name: sidewalk, parent: flat}
      - name: coarse
        classes:
          - {id: 0, name: flat}

Optional per-class ``color: [r, g, b]`` entries are kept as a palette.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar, Union

import numpy as np
import torch
import yaml

__all__ = ["Taxonomy", "TaxonomyError", "Level"]

LevelKey = Union[int, str]
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


class TaxonomyError(ValueError):
    """A taxonomy file or dict is malformed; the message names the source and entry."""


@dataclass(frozen=True)
class Level:
    """One level of a taxonomy.

    Attributes:
        name: Level name, e.g. ``"fine"``.
        names: Class names ordered by id.
        parents: Parent id in the next (coarser) level per class, or ``None`` for the
            coarsest level.
        colors: Optional ``[K, 3]`` RGB palette.
    """

    name: str
    names: tuple[str, ...]
    parents: tuple[int, ...] | None
    colors: tuple[tuple[int, int, int], ...] | None = field(default=None)


def _fail(source: str, msg: str) -> TaxonomyError:
    return TaxonomyError(f"{source}: {msg}")


def _parse_classes(raw_level: Any, li: int, source: str) -> tuple[str, list[dict]]:
    """Checks the level's shape and returns its name and its class entries sorted by id."""
    if not isinstance(raw_level, dict) or "classes" not in raw_level:
        raise _fail(source, f"levels[{li}] must be a mapping with 'name' and 'classes'")
    lname = str(raw_level.get("name", f"level{li}"))
    entries = raw_level["classes"]
    if not isinstance(entries, list) or not entries:
        raise _fail(source, f"level '{lname}': 'classes' must be a non-empty list")
    seen_ids: dict[int, int] = {}
    seen_names: set[str] = set()
    for ci, ent in enumerate(entries):
        where = f"level '{lname}', classes[{ci}] ({ent!r})"
        if not isinstance(ent, dict) or "id" not in ent or "name" not in ent:
            raise _fail(source, f"{where}: every class needs 'id' and 'name'")
        cid = ent["id"]
        if isinstance(cid, bool) or not isinstance(cid, int):
            raise _fail(source, f"{where}: id must be an integer")
        if cid in seen_ids:
            raise _fail(source, f"{where}: duplicate id {cid} (also classes[{seen_ids[cid]}])")
        seen_ids[cid] = ci
        name = str(ent["name"])
        if name in seen_names:
            raise _fail(source, f"{where}: duplicate name '{name}' in level '{lname}'")
        seen_names.add(name)
    k = len(entries)
    if sorted(seen_ids) != list(range(k)):
        missing = sorted(set(range(k)) - set(seen_ids))
        extra = sorted(set(seen_ids) - set(range(k)))
        raise _fail(source, f"level '{lname}': ids must be contiguous 0..{k - 1}; "
                            f"missing {missing}, out of range {extra}")
    return lname, sorted(entries, key=lambda e: e["id"])


def _resolve_parent(ent: dict, lname: str, parent_level: tuple[str, list[dict]],
                    source: str) -> int:
    pname, pentries = parent_level
    where = f"level '{lname}', class '{ent['name']}'"
    if "parent" not in ent:
        raise _fail(source, f"{where}: missing 'parent' (must name one class of level "
                            f"'{pname}')")
    p = ent["parent"]
    if isinstance(p, (list, tuple, dict)):
        raise _fail(source, f"{where}: parent must be exactly one class, got {p!r}")
    if isinstance(p, int) and not isinstance(p, bool):
        if not 0 <= p < len(pentries):
            raise _fail(source, f"{where}: parent id {p} does not exist in level '{pname}'")
        return p
    by_name = {str(e["name"]): int(e["id"]) for e in pentries}
    if str(p) not in by_name:
        raise _fail(source, f"{where}: parent '{p}' does not exist in level '{pname}'")
    return by_name[str(p)]


def _parse_colors(entries: list[dict], lname: str, source: str):
    if not any("color" in e for e in entries):
        return None
    out = []
    for e in entries:
        c = e.get("color")
        if not (isinstance(c, (list, tuple)) and len(c) == 3
                and all(isinstance(v, int) and 0 <= v <= 255 for v in c)):
            raise _fail(source, f"level '{lname}', class '{e['name']}': color must be "
                                f"[r, g, b] with ints in 0..255 (got {c!r})")
        out.append(tuple(int(v) for v in c))
    return tuple(out)


class Taxonomy:
    """An ordered list of label levels, finest first, linked by parent pointers.

    Args:
        levels: Levels ordered finest first; every level but the last has ``parents``.
        source: Where it came from (used in error messages).
    """

    def __init__(self, levels: Sequence[Level], source: str = "<taxonomy>") -> None:
        if not levels:
            raise _fail(source, "a taxonomy needs at least one level")
        names = [lv.name for lv in levels]
        if len(set(names)) != len(names):
            raise _fail(source, f"duplicate level names {names}")
        for i, lv in enumerate(levels):
            last = i == len(levels) - 1
            if last and lv.parents is not None:
                raise _fail(source, f"coarsest level '{lv.name}' cannot have parents")
            if not last:
                if lv.parents is None or len(lv.parents) != len(lv.names):
                    raise _fail(source, f"level '{lv.name}' needs one parent per class")
                k_up = len(levels[i + 1].names)
                bad = [n for n, p in zip(lv.names, lv.parents) if not 0 <= p < k_up]
                if bad:
                    raise _fail(source, f"level '{lv.name}': classes {bad} have parents "
                                        f"outside level '{levels[i + 1].name}'")
        self.levels: tuple[Level, ...] = tuple(levels)
        self.source = source

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "Taxonomy":
        """Builds a taxonomy from the parsed YAML structure described in the module doc."""
        if not isinstance(data, dict) or not isinstance(data.get("levels"), list):
            raise _fail(source, "expected a mapping with a 'levels' list")
        if not data["levels"]:
            raise _fail(source, "'levels' is empty")
        parsed = [_parse_classes(lv, i, source) for i, lv in enumerate(data["levels"])]
        levels = []
        for i, (lname, entries) in enumerate(parsed):
            last = i == len(parsed) - 1
            if last:
                with_parent = [e["name"] for e in entries if "parent" in e]
                if with_parent:
                    raise _fail(source, f"coarsest level '{lname}': classes {with_parent} "
                                        "have a parent but there is no coarser level")
                parents = None
            else:
                parents = tuple(_resolve_parent(e, lname, parsed[i + 1], source)
                                for e in entries)
            levels.append(Level(lname, tuple(str(e["name"]) for e in entries), parents,
                                _parse_colors(entries, lname, source)))
        return cls(levels, source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Taxonomy":
        """Loads a taxonomy YAML file (see module doc); errors name the file and entry."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"taxonomy file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise _fail(str(path), f"invalid YAML: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict:
        """Inverse of :meth:`from_dict` (parents written by name)."""
        out = []
        for i, lv in enumerate(self.levels):
            classes = []
            for cid, name in enumerate(lv.names):
                ent: dict[str, Any] = {"id": cid, "name": name}
                if lv.parents is not None:
                    ent["parent"] = self.levels[i + 1].names[lv.parents[cid]]
                if lv.colors is not None:
                    ent["color"] = list(lv.colors[cid])
                classes.append(ent)
            out.append({"name": lv.name, "classes": classes})
        return {"levels": out}

    def to_yaml(self, path: str | Path) -> None:
        """Writes the taxonomy as YAML (one class per line)."""
        lines = ["levels:"]
        for lv in self.to_dict()["levels"]:
            lines.append(f"  - name: {lv['name']}")
            lines.append("    classes:")
            for ent in lv["classes"]:
                flow = yaml.safe_dump(ent, default_flow_style=True, sort_keys=False).strip()
                lines.append(f"      - {flow}")
        Path(path).write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------------ queries
    @property
    def level_names(self) -> list[str]:
        """Level names, finest first."""
        return [lv.name for lv in self.levels]

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def level_index(self, level: LevelKey) -> int:
        """Index (0 = finest) of a level given by index (negative allowed) or name."""
        if isinstance(level, str):
            if level not in self.level_names:
                raise KeyError(f"{self.source}: no level '{level}'; levels are "
                               f"{self.level_names}")
            return self.level_names.index(level)
        n = self.num_levels
        if not -n <= level < n:
            raise IndexError(f"{self.source}: level {level} out of range for {n} levels")
        return level % n

    def num_classes(self, level: LevelKey = 0) -> int:
        return len(self.levels[self.level_index(level)].names)

    def class_names(self, level: LevelKey = 0) -> list[str]:
        return list(self.levels[self.level_index(level)].names)

    def palette(self, level: LevelKey = 0) -> list[tuple[int, int, int]] | None:
        colors = self.levels[self.level_index(level)].colors
        return None if colors is None else list(colors)

    def parent_map(self, from_level: LevelKey, to_level: LevelKey) -> np.ndarray:
        """Ancestor of every class of ``from_level`` in the coarser-or-equal ``to_level``.

        Returns:
            ``int64 [K_from]``; entry ``c`` is the id of ``c``'s ancestor in ``to_level``,
            composed through intermediate levels (identity when the levels are equal).
        """
        a, b = self.level_index(from_level), self.level_index(to_level)
        if a > b:
            raise ValueError(f"cannot map from coarser level '{self.levels[a].name}' to "
                             f"finer level '{self.levels[b].name}'")
        out = np.arange(len(self.levels[a].names), dtype=np.int64)
        for lv in self.levels[a:b]:
            out = np.asarray(lv.parents, dtype=np.int64)[out]
        return out

    def map_labels(self, labels: ArrayT, from_level: LevelKey, to_level: LevelKey,
                   ignore_index: int = 255, check: bool = True) -> ArrayT:
        """Maps a label map of ``from_level`` ids to ``to_level`` ids.

        Args:
            labels: Integer ``np.ndarray`` or ``torch.Tensor`` of any shape, e.g. ``[B, H, W]``.
            from_level: Level of the input ids (finer or equal to ``to_level``).
            to_level: Level of the output ids.
            ignore_index: Value kept as is.
            check: Raise on values that are neither a class of ``from_level`` nor
                ``ignore_index`` (a device sync for CUDA tensors); without it they
                become ``ignore_index``.

        Returns:
            Same type, shape, dtype and device as ``labels``.
        """
        lut = self.parent_map(from_level, to_level)
        k = len(lut)
        if isinstance(labels, torch.Tensor):
            lab = labels.long()
            valid = (lab >= 0) & (lab < k)
            if check and bool((~valid & (lab != ignore_index)).any()):
                bad = torch.unique(lab[~valid & (lab != ignore_index)])[:10].tolist()
                raise ValueError(f"labels contain values {bad} outside [0, {k}) that are "
                                 f"not ignore_index={ignore_index}")
            t = torch.as_tensor(lut, device=labels.device)
            out = torch.where(valid, t[lab.clamp(0, k - 1)], torch.full_like(lab, ignore_index))
            return out.to(labels.dtype)
        arr = np.asarray(labels)
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"labels must be an integer array, got {arr.dtype}")
        valid = (arr >= 0) & (arr < k)
        if check and np.any(~valid & (arr != ignore_index)):
            bad = np.unique(arr[~valid & (arr != ignore_index)])[:10].tolist()
            raise ValueError(f"labels contain values {bad} outside [0, {k}) that are not "
                             f"ignore_index={ignore_index}")
        out = np.where(valid, lut[np.clip(arr, 0, k - 1)], ignore_index)
        return out.astype(arr.dtype)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{lv.name}={len(lv.names)}" for lv in self.levels)
        return f"Taxonomy({sizes})"
