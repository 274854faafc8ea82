"""Gap measures: plain functions of arrays, one small module per family.

See ``docs/measures.md`` for every formula and its source.
"""

from .centroid import centroid_gap, per_dimension_gap
from .neighbours import mixed_neighbour_diagnostics
from .rmg import relative_modality_gap

__all__ = [
    "centroid_gap",
    "mixed_neighbour_diagnostics",
    "per_dimension_gap",
    "relative_modality_gap",
]
