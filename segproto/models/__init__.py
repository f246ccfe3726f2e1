"""Models: backbones (torchvision/timm wrappers), decode heads, projection head, segmentor."""

from .backbones import Backbone, ResNetBackbone, TimmBackbone, build_backbone
from .heads import ASPP, ConvBNReLU, DeepLabV3PlusHead, FCNHead, aspp_dilations
from .projection import ProjectionHead
from .segmentor import ARCHS, Segmentor, build_segmentor
from .weights import check_state_dict, load_checkpoint_file, timm_cache_file, torchvision_cache_file

__all__ = [
    "ARCHS",
    "ASPP",
    "Backbone",
    "ConvBNReLU",
    "DeepLabV3PlusHead",
    "FCNHead",
    "ProjectionHead",
    "ResNetBackbone",
    "Segmentor",
    "TimmBackbone",
    "aspp_dilations",
    "build_backbone",
    "build_segmentor",
    "check_state_dict",
    "load_checkpoint_file",
    "timm_cache_file",
    "torchvision_cache_file",
]
