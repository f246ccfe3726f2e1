"""Loss functions of the methods, as pure functions (no state; memories live in the methods)."""

from .pico import (AnchorSample, Synthesized, pico_contrast_loss, pixel_contrast_loss, sample_hard_anchors,
                   select_examples, synthesize_negatives)

__all__ = [
    "AnchorSample",
    "Synthesized",
    "pico_contrast_loss",
    "pixel_contrast_loss",
    "sample_hard_anchors",
    "select_examples",
    "synthesize_negatives",
]
