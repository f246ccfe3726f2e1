"""Label validation shared by the data loaders, the losses and the reference ops: a label is valid
when it is a class id in ``[0, num_classes)`` or ``ignore_index``. Works on torch tensors and numpy
arrays alike; the compiled ops apply the same rule in ``csrc/common/class_plan.cpp``
(``check_labels``)."""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["bad_label_mask", "check_labels", "first_bad_label"]


def bad_label_mask(labels: Any, num_classes: int, ignore_index: Optional[int] = None) -> Any:
    """Boolean mask of the labels outside ``[0, num_classes)`` that are not ``ignore_index``."""
    bad = (labels < 0) | (labels >= num_classes)
    return bad if ignore_index is None else bad & (labels != ignore_index)


def first_bad_label(labels: Any, num_classes: int, ignore_index: Optional[int] = None) -> Optional[int]:
    """The first invalid label in flat order, or None when every label is valid."""
    if (labels.numel() if hasattr(labels, "numel") else labels.size) == 0:
        return None
    bad = bad_label_mask(labels, num_classes, ignore_index)
    if not bool(bad.any()):
        return None
    return int(labels[bad].reshape(-1)[0])


def check_labels(labels: Any, num_classes: int, ignore_index: int, where: str) -> None:
    """Raises ``ValueError("<where>: label V is outside [0, K) and is not ignore_index (I)")``
    for the first invalid label."""
    value = first_bad_label(labels, num_classes, ignore_index)
    if value is not None:
        raise ValueError(f"{where}: label {value} is outside the valid range [0, {num_classes}) "
                         f"and is not ignore_index ({ignore_index})")
