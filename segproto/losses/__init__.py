"""Loss functions of the methods, as pure functions (no state; memories live in the methods)."""

from .hiposeg import (hierarchy_alignment_loss, online_prototypes, pixel_prototype_loss,
                      prototype_separation_loss)
from .pico import (AnchorSample, Synthesized, pico_contrast_loss, pixel_contrast_loss, sample_hard_anchors,
                   select_examples, synthesize_negatives)

__all__ = [
    "AnchorSample",
    "hierarchy_alignment_loss",
    "online_prototypes",
    "pixel_prototype_loss",
    "prototype_separation_loss",
    "Synthesized",
    "pico_contrast_loss",
    "pixel_contrast_loss",
    "sample_hard_anchors",
    "select_examples",
    "synthesize_negatives",
]
