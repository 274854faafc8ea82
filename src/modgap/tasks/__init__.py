"""Downstream tasks for image-text embeddings: retrieval, zero-shot classification,
clustering and mixed-modality search. Each is a plain function of arrays returning a flat dict
of JSON-able metrics (CLIP_benchmark names where one exists)."""

from __future__ import annotations

from .clustering import clustering_metrics, modality_purity
from .mixed import mixed_search_metrics
from .retrieval import retrieval_metrics, retrieval_ranks
from .zeroshot import (
    DEFAULT_TEMPLATES,
    ENSEMBLE_TEMPLATES,
    class_embeddings,
    ensemble_class_embeddings,
    zero_shot_from_encoder,
    zero_shot_metrics,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "ENSEMBLE_TEMPLATES",
    "class_embeddings",
    "clustering_metrics",
    "ensemble_class_embeddings",
    "mixed_search_metrics",
    "modality_purity",
    "retrieval_metrics",
    "retrieval_ranks",
    "zero_shot_from_encoder",
    "zero_shot_metrics",
]
