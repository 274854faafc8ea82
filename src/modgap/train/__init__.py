"""Training image-text matching models with VSE++ triplet, InfoNCE or the DIAS objective.

See ``docs/dias.md`` for the objective, the configs and the ablation that chose the defaults.
"""

from ..embeddings import FeatureSet
from ..io.features import load_features, write_features
from ..io.precomp import Vocabulary, load_precomp, write_toy_precomp
from .config import ConfigError, TrainConfig, config_from_dict, load_config
from .evaluate import class_retrieval_metrics, evaluate_model
from .losses import (
    DIASLoss,
    DimensionAlignmentLoss,
    InfoNCELoss,
    InterModalityLoss,
    IntraModalityLoss,
    LossConfig,
    TripletLoss,
    sparse_mask,
)
from .model import GPO, FeatureEncoder, MatchingModel, WordGRUEncoder
from .trainer import Trainer, train

__all__ = [
    "GPO",
    "ConfigError",
    "DIASLoss",
    "DimensionAlignmentLoss",
    "FeatureEncoder",
    "FeatureSet",
    "InfoNCELoss",
    "InterModalityLoss",
    "IntraModalityLoss",
    "LossConfig",
    "MatchingModel",
    "TrainConfig",
    "Trainer",
    "TripletLoss",
    "Vocabulary",
    "WordGRUEncoder",
    "class_retrieval_metrics",
    "config_from_dict",
    "evaluate_model",
    "load_config",
    "load_features",
    "load_precomp",
    "sparse_mask",
    "train",
    "write_features",
    "write_toy_precomp",
]
