"""Datasets read in a published folder layout: index-PNG labels with a fixed class table.

:class:`LayoutDataset` is a :class:`SegDataset` whose errors name the dataset's expected
layout (a wrong root, a missing image or label folder) and whose label check says what an
out-of-range value most likely means for that dataset (an unexpected label encoding, e.g. a
colour or instance PNG in place of the class-id PNGs). :func:`layout_factory` builds the
``build_dataset`` factory of such a kind; Mapillary Vistas (:mod:`segproto.data.datasets.mapillary`)
and PASCAL-Part-108 (:mod:`segproto.data.datasets.pascal_part`) use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..pipeline.dataset import DatasetError, SegDataset, Transform, _resolve

__all__ = ["LayoutDataset", "layout_factory"]


class LayoutDataset(SegDataset):
    """A folder dataset in a named official layout, with labels checked against its class table.

    Args:
        root: Dataset root.
        img_dir, ann_dir, split: As in :class:`SegDataset` (``split`` None: every image).
        dataset: Display name used in messages, e.g. ``"Mapillary Vistas v2.0"``.
        layout: The expected layout, one line, shown when a folder is missing.
        label_hint: Appended to the message of a label value outside the class table: what
            such a value usually means and which files to read instead.
        img_suffix, seg_map_suffix, classes, palette, ignore_index, reduce_zero_label, transform:
            As in :class:`SegDataset`.

    Raises:
        FileNotFoundError: Root, image or label folder, split file, an image or its label
            missing (messages name the path and the expected layout).
    """

    def __init__(self, root: str | Path, img_dir: str | Path, ann_dir: str | Path | None,
                 split: str | Path | None, *, dataset: str, layout: str, label_hint: str,
                 img_suffix: str, seg_map_suffix: str, classes: Sequence[str],
                 palette: Sequence[Sequence[int]] | None = None, ignore_index: int = 255,
                 reduce_zero_label: bool = False, transform: Transform | None = None) -> None:
        self.dataset_name, self.layout, self.label_hint = dataset, layout, label_hint
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{dataset} root not found: {root} (expected the layout {layout})")
        for what, folder in (("image", img_dir), ("label", ann_dir)):
            if folder is not None and not _resolve(root, folder).is_dir():
                found = sorted(p.name for p in root.iterdir())[:10]
                raise FileNotFoundError(
                    f"{dataset} {what} folder not found: {_resolve(root, folder)}; is {root} the "
                    f"{dataset} root? Expected the layout {layout} (the root holds {found})")
        if split is None and not any(_resolve(root, img_dir).rglob(f"*{img_suffix}")):
            raise FileNotFoundError(f"no '*{img_suffix}' images under {_resolve(root, img_dir)} "
                                    f"(expected the layout {layout})")
        super().__init__(root, img_dir, ann_dir, split, img_suffix=img_suffix,
                         seg_map_suffix=seg_map_suffix, classes=classes, palette=palette,
                         ignore_index=ignore_index, reduce_zero_label=reduce_zero_label,
                         transform=transform)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw checked sample ``i``; a label value outside the table names the file and the hint."""
        try:
            return super().load(i)
        except DatasetError as exc:
            if "are outside" not in str(exc):
                raise
            raise DatasetError(f"{exc}: unexpected label encoding for {self.dataset_name}; "
                               f"{self.label_hint}") from exc


def layout_factory(dataset: str, layout: str, label_hint: str,
                   subset_folders: Mapping[str, str] | None = None) -> Callable[..., LayoutDataset]:
    """The ``build_dataset`` factory of a :class:`LayoutDataset` kind.

    Args:
        dataset, layout, label_hint: As in :class:`LayoutDataset`.
        subset_folders: Folder name of a subset in the path templates, e.g.
            ``{"train": "training"}``; other subsets are used as they are.

    Returns:
        ``factory(root, cfg, split, subset, common)``. ``split_file`` null means every image; a
        split file that is set but missing for a plain ``train``/``val``/``test`` split also
        means every image (as for Cityscapes); for other splits it is an error naming the file.
    """
    folders = dict(subset_folders or {})

    def factory(root: Path, cfg: Mapping[str, Any], split: str, subset: str, common: dict) -> LayoutDataset:
        folder = folders.get(subset, subset)

        def fmt(template: Any) -> Any:
            return None if template is None else str(template).format(split=split, subset=folder)

        split_file = fmt(cfg.get("split_file"))
        if (split_file is not None and split == subset and subset in ("train", "val", "test")
                and not (root / split_file).is_file()):
            split_file = None
        return LayoutDataset(root, fmt(cfg["img_dir"]), fmt(cfg.get("ann_dir")), split_file,
                             dataset=dataset, layout=layout, label_hint=label_hint,
                             img_suffix=cfg["img_suffix"], seg_map_suffix=cfg["seg_map_suffix"], **common)

    return factory

