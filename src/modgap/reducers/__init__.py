"""Post-hoc modality-gap reducers with one scikit-learn-style interface.

``REDUCERS`` maps registry names (``center``, ``shift``, ``gaussian``, ``procrustes``,
``spectral``, ``ot-laplace``, ``ot-sinkhorn``) to classes; ``get_reducer(name, **params)``
builds one; ``load_reducer(path)`` reads a saved one. See docs/reducers.md.
"""

from ._registry import REDUCERS, get_reducer, load_reducer
from .base import Reducer
from .transformer import ModalityTransformer

# import order = registry order = the order of the docs and the bench table
# isort: off
from .centering import GapShift, MeanCentering
from .gaussian import GaussianMap
from .procrustes import ProcrustesAlignment
from .spectral import SpectralEmbedding
from .optimal_transport import LaplaceOT, SinkhornOT

# isort: on

__all__ = [
    "REDUCERS",
    "GapShift",
    "GaussianMap",
    "LaplaceOT",
    "MeanCentering",
    "ModalityTransformer",
    "ProcrustesAlignment",
    "Reducer",
    "SinkhornOT",
    "SpectralEmbedding",
    "get_reducer",
    "load_reducer",
]
