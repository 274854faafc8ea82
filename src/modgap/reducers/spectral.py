"""Spectral reducer (Fill the Gap): a shared embedding from the bipartite cross-modal graph."""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .._array import to_torch
from .._ties import TIE_TOL, exact_scores, row_scale, score_window, topk_rows
from ..errors import ModgapError, notice
from ._graph import KERNELS, bipartite_knn_graph, kernel_weights
from .base import Reducer, register

__all__ = ["SpectralEmbedding", "truncated_svd"]

SOLVERS = ("auto", "arpack", "lobpcg", "randomized", "dense")


def truncated_svd(
    A, k: int, solver: str = "arpack", tol: float = 1e-6, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``k`` singular triplets of ``A`` (sparse or dense), singular values descending."""
    n, m = A.shape
    if solver == "dense" or k >= min(n, m) - 1:
        dense = A.toarray() if sp.issparse(A) else np.asarray(A)
        U, s, Vt = np.linalg.svd(dense, full_matrices=False)
        return U[:, :k], s[:k], Vt[:k].T
    if solver == "randomized":
        from sklearn.utils.extmath import randomized_svd

        # singular values of a kNN graph crowd near 1: a small oversampling misses them
        U, s, Vt = randomized_svd(
            A, k, n_oversamples=max(50, k), n_iter=20, random_state=random_state
        )
        return U, s, Vt.T
    from scipy.sparse.linalg import svds

    rng = np.random.default_rng(random_state)
    v0 = rng.standard_normal(min(n, m))
    kwargs = {"tol": tol} if solver == "arpack" else {"maxiter": 500}
    U, s, Vt = svds(
        A,
        k=k,
        solver=solver,
        v0=v0 if solver == "arpack" else None,
        random_state=random_state,
        **kwargs,
    )
    order = np.argsort(-s)
    return U[:, order], s[order], Vt[order].T


@register
class SpectralEmbedding(Reducer):
    r"""Shared spectral embedding of images and texts from their bipartite similarity graph.

    Cross-modal weights :math:`W_{ij} = \kappa(x_i \cdot y_j)` (``kernel``: ``clip``
    :math:`\max(s, 0)` or ``exp`` :math:`e^{(s-1)/\tau}`), optionally kept only on the
    symmetric k-nearest-neighbour edges (text :math:`j` among image :math:`i`'s ``n_neighbors``
    nearest texts, or image :math:`i` among text :math:`j`'s nearest images). With degrees
    :math:`d_1 = W\mathbf 1`, :math:`d_2 = W^\top\mathbf 1` and
    :math:`\hat W = D_1^{-1/2} W D_2^{-1/2} = U \Sigma V^\top` (truncated SVD), the trivial
    triplet :math:`\sigma_0 = 1` is dropped and the next ``n_components`` give

    .. math:: F = D_1^{-1/2} U, \qquad G = D_2^{-1/2} V

    (images, texts). These are the smallest non-trivial eigenvectors of the random-walk
    normalised Laplacian of the bipartite graph :math:`\begin{pmatrix}0 & W\\ W^\top &
    0\end{pmatrix}`: its symmetric Laplacian :math:`I - \begin{pmatrix}0 & \hat W\\ \hat
    W^\top & 0\end{pmatrix}` has eigenvalue :math:`1 - \sigma_k` on :math:`(u_k, v_k)`. Images
    and texts thus share one coordinate system, and the modality offset, which the graph
    never sees, is gone. Reference: Role, Meyer, Amblard, "Fill the Gap: Quantifying and
    Reducing the Modality Gap in Image-Text Representation Learning" (2025); Dhillon,
    "Co-clustering documents and words using bipartite spectral graph partitioning" (KDD 2001).

    **Out-of-sample (Nyström) extension.** From :math:`\hat W V = U\Sigma` follows
    :math:`F = D_1^{-1} W G\,\Sigma^{-1}`, i.e. row by row

    .. math:: f(x) = \frac{1}{d(x)} \sum_j w_j(x)\, g_j\, \Sigma^{-1}, \qquad
              d(x) = \sum_j w_j(x),

    where :math:`w_j(x)` are the weights of a new image to the fitted texts under the same
    kernel and kNN rule (row rule on :math:`x`'s own similarities, column rule against the
    stored per-text thresholds). For a fitted image :math:`w(x_i)` is row :math:`i` of
    :math:`W`, so the extension reproduces its fitted embedding exactly (up to SVD accuracy);
    texts use :math:`g(y) = d(y)^{-1}\sum_i w_i(y) f_i \Sigma^{-1}` likewise.

    Parameters
    ----------
    n_components : int, default 60
        Output dimensions (non-trivial singular vectors kept).
    n_neighbors : int or None, default 15
        Cross-modal neighbours per row and per column; ``None`` keeps every edge (dense
        route, for small data only: at most ``dense_limit`` edges).
    kernel : {"clip", "exp"}, default "exp"
    temperature : float, default 0.05
        :math:`\tau` of the exponential kernel.
    solver : {"auto", "arpack", "lobpcg", "randomized", "dense"}, default "auto"
        Truncated SVD; ``auto`` is ``dense`` for small graphs and ``arpack`` otherwise
        (measured fastest at 2e4-1e5 points, see docs/reducers.md).
    tol : float, default 1e-6
        ARPACK tolerance.
    normalize : bool, default True
        L2-normalise the output rows.
    device : str or None
        Torch device of the similarity blocks (default: the compute context's).
    random_state : int, default 0
    dense_limit : int, default 25_000_000
        Most edges the dense route (``n_neighbors=None``) accepts.

    Attributes
    ----------
    image_embedding_, text_embedding_ : ndarray
        :math:`F` (n_i, k) and :math:`G` (n_t, k), before normalisation.
    singular_values_ : ndarray (k,)
    image_fit_, text_fit_ : ndarray
        The fitted embeddings (needed by the extension).
    image_kth_, text_kth_ : ndarray
        Per-row / per-column kNN similarity thresholds.
    graph_seconds_, svd_seconds_ : float
        Time spent building the graph and in the truncated SVD.
    """

    name = "spectral"
    fitted_arrays: ClassVar[dict[str, str]] = {
        "image_embedding_": "ni,k",
        "text_embedding_": "nt,k",
        "singular_values_": "k",
        "image_fit_": "ni,d",
        "text_fit_": "nt,d",
        "image_kth_": "ni",
        "text_kth_": "nt",
        "image_degree_": "ni",
        "text_degree_": "nt",
    }
    fitted_scalars: ClassVar[dict[str, type]] = {"graph_seconds_": float, "svd_seconds_": float}

    def __init__(
        self,
        n_components: int = 60,
        n_neighbors: int | None = 15,
        kernel: str = "exp",
        temperature: float = 0.05,
        solver: str = "auto",
        tol: float = 1e-6,
        normalize: bool = True,
        device: str | None = None,
        random_state: int = 0,
        dense_limit: int = 25_000_000,
    ):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.kernel = kernel
        self.temperature = temperature
        self.solver = solver
        self.tol = tol
        self.normalize = normalize
        self.device = device
        self.random_state = random_state
        self.dense_limit = dense_limit

    def _check_params(self):
        self._check_number("n_components", 1, None, integer=True)
        if self.n_neighbors is not None:
            self._check_number("n_neighbors", 1, None, integer=True)
        self._check_choice("kernel", KERNELS)
        self._check_number("temperature", 1e-6, None)
        self._check_choice("solver", SOLVERS)
        self._check_number("tol", 0.0, 1.0)

    # -- graph ------------------------------------------------------------------------------
    def _dense_graph(self, X, Y):
        import torch

        n, m = X.shape[0], Y.shape[0]
        if n * m > self.dense_limit:
            raise ModgapError(
                f"spectral: the dense route (n_neighbors=None) needs {n} x {m} edges, more than "
                f"dense_limit={self.dense_limit}; set n_neighbors (e.g. 15) for a sparse kNN graph"
            )
        dev = self.compute.torch_device
        s = to_torch(X, dev, torch.float64) @ to_torch(Y, dev, torch.float64).T
        return kernel_weights(s, self.kernel, self.temperature).cpu().numpy()

    def _fit(self, X, Y, text_to_image):
        n, m = X.shape[0], Y.shape[0]
        k = self.n_components
        if k + 1 > min(n, m):
            raise ModgapError(
                f"spectral: n_components={k} needs more than {k} images and texts "
                f"(got {n} images, {m} texts); lower n_components"
            )
        t0 = time.perf_counter()
        if self.n_neighbors is None:
            W = self._dense_graph(X, Y)
            self.image_kth_ = np.full(n, -np.inf)
            self.text_kth_ = np.full(m, -np.inf)
        else:
            W, self.image_kth_, self.text_kth_ = bipartite_knn_graph(
                X, Y, self.n_neighbors, self.kernel, self.temperature, compute=self.compute
            )
        self.graph_seconds_ = time.perf_counter() - t0
        d1 = np.asarray(W.sum(axis=1)).ravel()
        d2 = np.asarray(W.sum(axis=0)).ravel()
        if (d1 <= 0).any() or (d2 <= 0).any():
            notice(
                f"spectral: {(d1 <= 0).sum()} image(s) and {(d2 <= 0).sum()} text(s) have no "
                "positive edge (all similarities <= 0 with kernel='clip'); they get a zero "
                "embedding - kernel='exp' avoids this"
            )
        r1 = 1 / np.sqrt(np.where(d1 > 0, d1, 1.0))
        r2 = 1 / np.sqrt(np.where(d2 > 0, d2, 1.0))
        if sp.issparse(W):
            W_hat = sp.diags(r1) @ W @ sp.diags(r2)
        else:
            W_hat = r1[:, None] * W * r2[None, :]
        solver = self.solver
        if solver == "auto":
            solver = "dense" if min(n, m) <= 1500 else "arpack"
        t0 = time.perf_counter()
        U, s, V = truncated_svd(W_hat, k + 1, solver, self.tol, self.random_state)
        self.svd_seconds_ = time.perf_counter() - t0
        if s[k] <= 1e-12:
            raise ModgapError(
                f"spectral: the graph has only {int((s > 1e-12).sum())} non-zero singular "
                f"values; lower n_components (now {k}) or raise n_neighbors"
            )
        self.singular_values_ = s[1:].astype(np.float64)
        self.image_embedding_ = (r1[:, None] * U[:, 1:]).astype(np.float32)
        self.text_embedding_ = (r2[:, None] * V[:, 1:]).astype(np.float32)
        self.image_degree_ = d1
        self.text_degree_ = d2
        self.image_fit_ = X
        self.text_fit_ = Y

    def _fitted_outputs(self, X, Y):
        return (
            self._maybe_normalize(self.image_embedding_.copy()),
            self._maybe_normalize(self.text_embedding_.copy()),
        )

    # -- Nyström extension -----------------------------------------------------------------
    def _extend(self, Q, support, support_kth, support_embedding):
        import torch

        dev = self.compute.torch_device
        S = to_torch(support, dev, torch.float32)
        E = to_torch(support_embedding, dev, torch.float32)
        kth = to_torch(support_kth, dev, torch.float64)
        inv_sigma = to_torch(1 / self.singular_values_, dev, torch.float32)
        d = S.shape[1]
        out = np.empty((Q.shape[0], E.shape[1]), dtype=np.float32)
        b = self.compute.rows_per_block(4 * S.shape[0], buffers=3)
        for start in range(0, Q.shape[0], b):
            q = to_torch(Q[start : start + b], dev, torch.float32)
            s = q @ S.T
            if self.n_neighbors is None:
                w = kernel_weights(s, self.kernel, self.temperature)
                emb = (w @ E) / w.sum(dim=1, keepdim=True).clamp_min(1e-30)
            else:
                # the fit's rule with the fit's exact scores: the row's own exact top-k, plus
                # the support points whose stored exact k-th best similarity this query
                # reaches (the column rule), ties included
                scale = row_scale(q, S)

                def exact(rows, cols, q=q):
                    return exact_scores(q, S, rows, cols)

                k = min(self.n_neighbors, S.shape[0])
                j, v = topk_rows(s, k, scale, d, exact)
                s.scatter_(1, j, -torch.inf)  # row-rule edges are not counted twice
                win = float(score_window(d) * scale.max())
                r2, c2 = (s >= (kth - win).float()[None, :]).nonzero(as_tuple=True)
                s2 = exact(r2, c2)
                keep = s2 >= kth[c2] - TIE_TOL * scale[r2]
                r2, c2, s2 = r2[keep], c2[keep], s2[keep]
                rows = torch.cat([torch.arange(s.shape[0], device=dev).repeat_interleave(k), r2])
                cols = torch.cat([j.reshape(-1), c2])
                w = kernel_weights(
                    torch.cat([v.reshape(-1), s2]), self.kernel, self.temperature
                ).float()
                deg = torch.zeros(s.shape[0], device=dev).index_add_(0, rows, w)
                emb = torch.zeros((s.shape[0], E.shape[1]), device=dev)
                emb.index_add_(0, rows, w[:, None] * E[cols])
                emb /= deg.clamp_min(1e-30)[:, None]
            out[start : start + b] = (emb * inv_sigma).cpu().numpy()
        return self._maybe_normalize(out)

    def _transform_images(self, X):
        return self._extend(X, self.text_fit_, self.text_kth_, self.text_embedding_)

    def _transform_texts(self, Y):
        return self._extend(Y, self.image_fit_, self.image_kth_, self.image_embedding_)
