"""modgap: measure, reduce and train away the modality gap of image-text embedding models.

The public API is flat: ``modgap.read_embeddings``, ``modgap.measure``, ``modgap.get_reducer``,
``modgap.retrieval_metrics``, ``modgap.DIASLoss`` ... Names are imported lazily (PEP 562) so
``import modgap`` stays cheap and does not pull in torch until a heavy name is used.

Data flows one way: load -> EmbeddingSet -> (reducer.fit / transform) -> tasks -> results ->
report.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # data model, errors, I/O
    "EmbeddingSet": "embeddings",
    "ModgapError": "errors",
    "InputError": "errors",
    "NotFittedError": "errors",
    "ModgapNotice": "errors",
    "read_embeddings": "io",
    "write_embeddings": "io",
    "read_pairs": "io",
    "FORMATS": "io",
    "Format": "io",
    "provenance": "provenance",
    "jsonable": "provenance",
    "Results": "_resultdict",
    # measures
    "measure_all": "measures",
    "resolve_measures": "measures",
    "Moments": "measures",
    "MEASURES": "measures",
    "centroid_gap": "measures",
    "per_dimension_gap": "measures",
    "linear_separability": "measures",
    "relative_modality_gap": "measures",
    "rmg_no_information": "measures",
    "mixed_neighbour_diagnostics": "measures",
    "frechet_distance": "measures",
    "alignment": "measures",
    "uniformity": "measures",
    "cross_uniformity": "measures",
    "cosine_stats": "measures",
    "CentroidGapAccumulator": "measures",
    "PerDimensionGapAccumulator": "measures",
    "FrechetAccumulator": "measures",
    "AlignmentAccumulator": "measures",
    "RMGAccumulator": "measures",
    # reducers
    "REDUCERS": "reducers",
    "Reducer": "reducers",
    "get_reducer": "reducers",
    "load_reducer": "reducers",
    "MeanCentering": "reducers",
    "GapShift": "reducers",
    "GaussianMap": "reducers",
    "ProcrustesAlignment": "reducers",
    "SpectralEmbedding": "reducers",
    "LaplaceOT": "reducers",
    "SinkhornOT": "reducers",
    "ModalityTransformer": "reducers",
    # tasks
    "retrieval_metrics": "tasks",
    "retrieval_ranks": "tasks",
    "zero_shot_metrics": "tasks",
    "zero_shot_from_encoder": "tasks",
    "class_embeddings": "tasks",
    "clustering_metrics": "tasks",
    "modality_purity": "tasks",
    "mixed_search_metrics": "tasks",
    "hubness": "measures",
    "CSLS": "tasks.scoring",
    "InvertedSoftmax": "tasks.scoring",
    "QBNorm": "tasks.scoring",
    "CORRECTIONS": "tasks.scoring",
    "get_correction": "tasks.scoring",
    "reduce_to_folder": "workflow",
    "embed_folder": "encoders.embed",
    "FeatureSet": "embeddings",
    "read_webdataset": "datasets",
    "run_tasks": "tasks.suite",
    "Compute": "compute",
    "run_bench": "bench",
    "render_report": "report",
    "write_report": "report",
    "read_results": "report",
    "to_frame": "report",
    # encoders
    "load_encoder": "encoders",
    "Encoder": "encoders",
    "PocketEncoder": "encoders.pocket",
    # evaluation data
    "load_fashion_mnist": "datasets",
    "load_photos": "datasets",
    "read_caption_file": "datasets.caption_file",
    # training
    "DIASLoss": "train",
    "LossConfig": "train",
    "InfoNCELoss": "train",
    "TripletLoss": "train",
    "DimensionAlignmentLoss": "train",
    "InterModalityLoss": "train",
    "IntraModalityLoss": "train",
    "MatchingModel": "train",
    "Trainer": "train",
    "sparse_mask": "train",
}


# public aliases: public name -> (module, name there). ``modgap.train`` stays the subpackage.
_ALIASES: dict[str, tuple[str, str]] = {
    "measure": ("measures", "measure_all"),
    "use_compute": ("compute", "use"),
    "load_train_config": ("train", "load_config"),
    "train_matching_model": ("train", "train"),
}

__all__ = ["__version__", *sorted([*_EXPORTS, *_ALIASES])]


def __getattr__(name: str) -> Any:
    if name in _ALIASES:
        module, name_in_module = _ALIASES[name]
    elif name in _EXPORTS:
        name_in_module, module = name, _EXPORTS[name]
    else:
        raise AttributeError(f"module 'modgap' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name_in_module)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
