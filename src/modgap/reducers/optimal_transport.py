"""Optimal-transport reducers (Fill the Gap): exact OT with Laplacian regularisation through
POT, and scalable entropic OT (log-domain Sinkhorn in torch) with an out-of-sample map."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .._array import to_numpy, to_torch
from .._ties import topk_ids
from ..compute import Compute, resolve
from ..errors import ModgapError, notice
from ._sinkhorn import entropic_map, sinkhorn_log
from .base import Reducer, register

__all__ = ["LaplaceOT", "SinkhornOT", "nearest_displacement"]

DIRECTIONS = ("images->texts", "texts->images", "barycenter")


def nearest_displacement(Q, support, support_mapped, compute: Compute | None = None) -> np.ndarray:
    r"""POT's out-of-sample rule for a discrete transport: move each query by the displacement
    of its nearest fitted source point, :math:`T(x) = T(x_{i^*}) + x - x_{i^*}` with
    :math:`i^* = \arg\min_i \lVert x - x_i\rVert` (Ferradans et al., SIAM J. Imaging Sci. 2014).
    A fitted point is its own nearest neighbour, so it keeps its barycentric image. The fitted
    points are unit rows, so the nearest is the largest dot product, found exactly
    (:func:`modgap._ties.topk_ids`: the same neighbour, ties to the lower index, whatever the
    BLAS kernel, block size or thread count).
    """
    import torch

    compute = resolve(compute)
    device = compute.torch_device
    S = to_torch(support, device, torch.float32)
    q = to_torch(Q, device, torch.float32)
    idx = to_numpy(topk_ids(q, S, 1, compute.rows_per_block(4 * S.shape[0], buffers=2)))[:, 0]
    return np.asarray(support_mapped, dtype=np.float64)[idx] + Q - support[idx]


def _combine(direction: str, side: str, Z: np.ndarray, mapped) -> np.ndarray:
    """Apply the direction rule: the moving side goes to its image, 'barycenter' to the
    midpoint :math:`(z + T(z))/2` (the displacement interpolation at t = 1/2)."""
    moving = {"images->texts": "images", "texts->images": "texts"}.get(direction)
    if direction == "barycenter":
        return (Z + mapped()) / 2
    if side == moving:
        return mapped()
    return Z


@register
class LaplaceOT(Reducer):
    r"""Exact optimal transport with Laplacian regularisation (POT ``EMDLaplaceTransport``).

    Solves :math:`\min_{P \in \Pi(a, b)} \langle C, P\rangle + \eta\,\Omega_L(P)` where
    :math:`\Omega_L` penalises transported source points that break the kNN graph structure of
    the source (Flamary et al., "Optimal transport with Laplacian regularization", NIPS
    workshop 2014; Ferradans et al. 2014), then maps each point to its barycentric image
    :math:`T(x_i) = \sum_j P_{ij} y_j / \sum_j P_{ij}`, as Fill the Gap (Role et al. 2025)
    reports. Unseen points follow POT's rule (:func:`nearest_displacement`).

    Exact OT costs :math:`O(n^3)` per conditional-gradient step, so fitting is refused above
    ``max_size`` points per side; use ``ot-sinkhorn`` for larger data.

    Parameters
    ----------
    direction : {"images->texts", "texts->images", "barycenter"}, default "images->texts"
    reg_lap : float, default 1.0
        Laplacian regularisation strength :math:`\eta`.
    reg_src : float, default 1.0
        Source/target balance of the Laplacian term (POT's ``reg_src``).
    similarity_param : int or None
        Neighbours of the kNN graph (POT's default when None).
    max_iter : int, default 20
        Conditional-gradient iterations.
    max_size : int, default 5000
    normalize : bool, default True
        L2-normalise the outputs.

    Attributes
    ----------
    source_fit_, target_fit_ : ndarray
        Fitted source (moving modality of ``images->texts``: images) and target points.
    source_mapped_, target_mapped_ : ndarray
        Barycentric images of the fitted source points on the target, and vice versa.
    """

    name = "ot-laplace"
    fitted_arrays: ClassVar[dict[str, str]] = {
        "source_fit_": "ni,d",
        "target_fit_": "nt,d",
        "source_mapped_": "ni,d",
        "target_mapped_": "nt,d",
    }

    def __init__(
        self,
        direction: str = "images->texts",
        reg_lap: float = 1.0,
        reg_src: float = 1.0,
        similarity_param: int | None = None,
        max_iter: int = 20,
        max_size: int = 5000,
        normalize: bool = True,
    ):
        self.direction = direction
        self.reg_lap = reg_lap
        self.reg_src = reg_src
        self.similarity_param = similarity_param
        self.max_iter = max_iter
        self.max_size = max_size
        self.normalize = normalize

    def _check_params(self):
        self._check_choice("direction", DIRECTIONS)
        self._check_number("reg_lap", 0.0, None)
        self._check_number("reg_src", 0.0, 1.0)
        self._check_number("max_iter", 1, None, integer=True)
        self._check_number("max_size", 2, None, integer=True)
        if self.similarity_param is not None:
            self._check_number("similarity_param", 1, None, integer=True)

    def _fit(self, X, Y, text_to_image):
        import ot

        for what, n in (("images", X.shape[0]), ("texts", Y.shape[0])):
            if n > self.max_size:
                raise ModgapError(
                    f"ot-laplace: {n} {what} is above max_size={self.max_size}; exact OT with "
                    "Laplacian regularisation is cubic in the number of points. Use "
                    "'ot-sinkhorn' (entropic OT, scales to 1e5 points), fit on a subsample, or "
                    "raise max_size if you can wait"
                )
        # images are the POT source; texts->images is handled by the inverse map
        Xs, Xt = X.astype(np.float64), Y.astype(np.float64)
        model = ot.da.EMDLaplaceTransport(
            reg_lap=self.reg_lap,
            reg_src=self.reg_src,
            similarity_param=self.similarity_param,
            max_iter=self.max_iter,
        )
        model.fit(Xs=Xs, Xt=Xt)
        P = np.asarray(model.coupling_)
        rs, cs = P.sum(axis=1), P.sum(axis=0)
        self.source_fit_, self.target_fit_ = Xs, Xt
        self.source_mapped_ = (P / np.where(rs > 0, rs, 1)[:, None]) @ Xt
        self.target_mapped_ = (P.T / np.where(cs > 0, cs, 1)[:, None]) @ Xs

    def _transform_images(self, X):
        return self._maybe_normalize(
            _combine(
                self.direction,
                "images",
                X.astype(np.float64),
                lambda: nearest_displacement(
                    X, self.source_fit_, self.source_mapped_, self.compute
                ),
            ).astype(np.float32)
        )

    def _transform_texts(self, Y):
        return self._maybe_normalize(
            _combine(
                self.direction,
                "texts",
                Y.astype(np.float64),
                lambda: nearest_displacement(
                    Y, self.target_fit_, self.target_mapped_, self.compute
                ),
            ).astype(np.float32)
        )


@register
class SinkhornOT(Reducer):
    r"""Entropic optimal transport between the modalities, with an out-of-sample entropic map.

    Fits the dual potentials :math:`(f, g)` of entropic OT between the uniform measures on the
    images and the texts (squared Euclidean cost, regularisation :math:`\varepsilon` = ``reg``)
    with log-domain Sinkhorn in torch (:func:`~modgap.reducers._sinkhorn.sinkhorn_log`;
    blockwise, so 20,000 x 20,000 fits in about 2 GB and larger problems recompute the cost).
    Any image, fitted or new, is mapped by the entropic map

    .. math:: T(x) = \sum_j \operatorname{softmax}_j\big((g_j - \lVert x - y_j\rVert^2)/
              \varepsilon\big)\, y_j,

    and any text by the symmetric map onto the images with :math:`f`. ``barycenter`` moves both
    halfway, :math:`(z + T(z))/2`. Reference: Cuturi, "Sinkhorn distances", NeurIPS 2013;
    Pooladian & Niles-Weed (2021) for the map; Role et al. (2025) for its use on the gap.

    Parameters
    ----------
    direction : {"images->texts", "texts->images", "barycenter"}, default "barycenter"
        On COCO-500 ``barycenter`` closes the gap and improves R@1, while mapping images fully
        onto texts at this ``reg`` contracts them (docs/reducers.md).
    reg : float, default 0.05
        Entropic regularisation :math:`\varepsilon` (in units of the squared distance; unit
        vectors have costs in [0, 4]).
    max_iter : int, default 2000
    tol : float, default 1e-4
        Stop when the row-marginal L1 error is below it (float32 potentials bottom out
        near 1e-5).
    normalize : bool, default True
        L2-normalise the outputs.
    device : str or None
        Torch device (default: the compute context's).
    max_cache_gb : float or None, default None
        Cache the cost matrix when it fits in this many GiB (default: the compute context's
        memory budget); otherwise recompute it in blocks each iteration.

    Attributes
    ----------
    image_fit_, text_fit_ : ndarray
    image_potential_, text_potential_ : ndarray
        :math:`f` (n_i,) and :math:`g` (n_t,).
    n_iter_ : int
    marginal_error_ : float
    """

    name = "ot-sinkhorn"
    fitted_arrays: ClassVar[dict[str, str]] = {
        "image_fit_": "ni,d",
        "text_fit_": "nt,d",
        "image_potential_": "ni",
        "text_potential_": "nt",
    }
    fitted_scalars: ClassVar[dict[str, type]] = {"n_iter_": int, "marginal_error_": float}

    def __init__(
        self,
        direction: str = "barycenter",
        reg: float = 0.05,
        max_iter: int = 2000,
        tol: float = 1e-4,
        normalize: bool = True,
        device: str | None = None,
        max_cache_gb: float | None = None,
    ):
        self.direction = direction
        self.reg = reg
        self.max_iter = max_iter
        self.tol = tol
        self.normalize = normalize
        self.device = device
        self.max_cache_gb = max_cache_gb

    def _check_params(self):
        self._check_choice("direction", DIRECTIONS)
        self._check_number("reg", 1e-6, None)
        self._check_number("max_iter", 1, None, integer=True)
        self._check_number("tol", 0.0, None)
        if self.max_cache_gb is not None:
            self._check_number("max_cache_gb", 0.0, None)

    def _fit(self, X, Y, text_to_image):
        res = sinkhorn_log(
            X,
            Y,
            self.reg,
            max_iter=self.max_iter,
            tol=self.tol,
            compute=self.compute,
            max_cache_bytes=None if self.max_cache_gb is None else int(self.max_cache_gb * 2**30),
        )
        if not res.converged:
            notice(
                f"ot-sinkhorn: not converged after {res.n_iter} iterations (marginal error "
                f"{res.marginal_error:.2e} > tol={self.tol}); raise max_iter or reg"
            )
        self.image_fit_, self.text_fit_ = X, Y
        self.image_potential_, self.text_potential_ = res.f, res.g
        self.n_iter_ = res.n_iter
        self.marginal_error_ = float(res.marginal_error)

    def _transform_images(self, X):
        return self._maybe_normalize(
            _combine(
                self.direction,
                "images",
                X,
                lambda: entropic_map(
                    X, self.text_fit_, self.text_potential_, self.reg, compute=self.compute
                ),
            )
        )

    def _transform_texts(self, Y):
        return self._maybe_normalize(
            _combine(
                self.direction,
                "texts",
                Y,
                lambda: entropic_map(
                    Y, self.image_fit_, self.image_potential_, self.reg, compute=self.compute
                ),
            )
        )
