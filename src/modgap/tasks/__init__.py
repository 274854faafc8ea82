"""Downstream tasks for image-text embeddings: retrieval, zero-shot classification,
clustering and mixed-modality search. Each is a plain function of arrays returning a flat dict
of JSON-able metrics (CLIP_benchmark names where one exists)."""

from __future__ import annotations

from .retrieval import retrieval_metrics, retrieval_ranks

__all__ = ["retrieval_metrics", "retrieval_ranks"]
