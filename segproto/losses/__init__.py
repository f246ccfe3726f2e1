"""Loss functions of the methods, as pure functions (no state; memories live in the methods)."""

from .hdmnet import correlation_distillation_loss
from .hiposeg import (hierarchy_alignment_loss, online_prototypes, pixel_prototype_loss,
                      prototype_separation_loss)
from .pico import (AnchorSample, Synthesized, all_pairs_contrast_loss, hardest_by_class,
                   memory_bank_contrast_loss, pico_contrast_loss, pixel_contrast_loss, sample_hard_anchors,
                   sampled_contrast_loss, select_examples, synthesize_negatives)
from .prcl import negative_class_probs, sample_anchors, sample_negative_pixels
from .prcl_loss import PRCLSample, prcl_logits, prcl_loss, prcl_sample
from .prcl_mls import mutual_likelihood_score, mutual_likelihood_score_indexed
from .prcl_prototypes import BatchPrototypes, distribution_prototypes, gdp_update, virtual_negatives

__all__ = [
    "AnchorSample",
    "BatchPrototypes",
    "PRCLSample",
    "correlation_distillation_loss",
    "distribution_prototypes",
    "gdp_update",
    "mutual_likelihood_score",
    "mutual_likelihood_score_indexed",
    "negative_class_probs",
    "prcl_logits",
    "prcl_loss",
    "prcl_sample",
    "sample_anchors",
    "sample_negative_pixels",
    "virtual_negatives",
    "hierarchy_alignment_loss",
    "online_prototypes",
    "pixel_prototype_loss",
    "prototype_separation_loss",
    "Synthesized",
    "all_pairs_contrast_loss",
    "hardest_by_class",
    "memory_bank_contrast_loss",
    "sampled_contrast_loss",
    "sample_hard_anchors",
    "select_examples",
    "synthesize_negatives",
]
