"""Import paths of modules that live in a subpackage of segproto.data, kept importable.

``import segproto.data.dataset`` gives the module :mod:`segproto.data.pipeline.dataset` itself
(not a copy), and ``python -m segproto.data.generate`` runs :mod:`segproto.data.synth.generate`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: flat name under segproto.data -> its module path under segproto.data
MOVED = {
    "dataset": "pipeline.dataset", "transforms": "pipeline.transforms", "batch_aug": "pipeline.batch_aug",
    "sampler": "pipeline.sampler", "taxonomy": "pipeline.taxonomy", "fewshot": "pipeline.fewshot",
    "synth_classes": "synth.classes", "synth_canvas": "synth.canvas", "synth_objects": "synth.objects",
    "synth_scene": "synth.scene", "synthetic": "synth.synthetic", "generate": "synth.generate",
    "cityscapes": "datasets.cityscapes", "mapillary": "datasets.mapillary",
    "pascal_part": "datasets.pascal_part", "pascal_part_convert": "datasets.pascal_part_convert",
    "datasets_std": "datasets.standard", "std_classes": "datasets.std_classes", "layout": "datasets.layout",
    "splits": "datasets.splits", "convert": "datasets.convert", "convert_voc": "datasets.convert_voc",
    "convert_common": "datasets.convert_common",
}
PACKAGE = __name__.rpartition(".")[0]


def target(fullname: str) -> str | None:
    """The module that ``fullname`` names now, or None when it is not a moved path."""
    pkg, _, name = fullname.rpartition(".")
    return f"{PACKAGE}.{MOVED[name]}" if pkg == PACKAGE and name in MOVED else None


class MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Finds a moved path and loads it as the module that holds the code now."""

    def __init__(self) -> None:
        self._specs: dict[str, object] = {}

    def find_spec(self, fullname, path=None, target_=None):
        new = target(fullname)
        if new is None:
            return None
        real = importlib.util.find_spec(new)
        return importlib.util.spec_from_loader(fullname, self, origin=real.origin if real else None)

    def create_module(self, spec):
        module = importlib.import_module(target(spec.name))
        self._specs[spec.name] = module.__spec__  # the import system sets the alias spec: put it back
        return module

    def exec_module(self, module):
        module.__spec__ = self._specs.pop(module.__spec__.name)

    def get_code(self, fullname):
        """For ``python -m``: the code of the new module (it imports its package by absolute path)."""
        real = importlib.util.find_spec(target(fullname))
        return real.loader.get_code(real.name)

    def get_source(self, fullname):
        real = importlib.util.find_spec(target(fullname))
        return real.loader.get_source(real.name)


if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(MovedFinder())
