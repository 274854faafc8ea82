r"""Retrieval-time hubness corrections: reducers of the scoring step.

A gap reducer moves the embeddings; these leave them alone and change how a retrieval scores
a candidate. Hubs are candidates that sit in the top-k of many queries; each correction lowers
a candidate's score by how close it is to queries *in general*, measured against a **query
bank**: embeddings of the query modality taken from the fit split (texts for text → image,
images for image → text). Fitted on one split, they score another.

All three rank the candidates of a query ``q`` by a monotone reparametrisation of their score

.. math:: s(q, c) - a_q\, o(c),

one float64 offset ``o(c)`` per candidate (and direction), applied to every query
(``a_q = 1``) or, for QB-Norm, to the queries chosen by the dynamic rule. So
:func:`modgap.tasks.retrieval.retrieval_ranks` keeps its one blocked pass and its exact
comparisons (:mod:`modgap._ties`): the float32 window grows by the rounding of the offsets.

* :class:`CSLS` (Conneau, Lample, Ranzato, Denoyer & Jégou, "Word translation without parallel
  data", ICLR 2018): :math:`\mathrm{CSLS}(q, c) = 2\cos(q, c) - r_T(q) - r_S(c)`, with
  :math:`r_S(c)` the mean cosine of ``c`` to its ``k`` nearest bank queries. :math:`r_T(q)` is
  the same for every candidate of ``q`` and cannot change its ranking, so
  :math:`o(c) = r_S(c) / 2`.
* :class:`InvertedSoftmax` (Smith, Turban, Hamblin & Hammerla, "Offline bilingual word vectors,
  orthogonal transformations and the inverted softmax", ICLR 2017):
  :math:`P(c \mid q) = e^{\beta s(q, c)} / \sum_{q' \in B} e^{\beta s(q', c)}`, ranked through
  its logarithm divided by β: :math:`o(c) = \frac1\beta \log \frac{1}{|B|}\sum_{q' \in B}
  e^{\beta s(q', c)}` (the ``1/|B|`` is a constant, which keeps ``o`` between the smallest
  and the largest bank score instead of ``log|B|/β`` above it).
* :class:`QBNorm` (Bogolin, Croitoru, Jin, Liu & Albanie, "Cross Modal Retrieval with
  Querybank Normalisation", CVPR 2022), with the dynamic inverted softmax: the inverted softmax
  for the queries whose top-1 candidate is in the bank's activation set, the raw similarity for
  the others (details in the class).

Offsets are statistics of whole bank × candidate score matrices; they are computed from
:func:`modgap._ties.fixed_scores` (float64, the same bits on every machine, at matmul speed)
with reductions in a fixed order, so they do not depend on block sizes or threads either.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from .._array import check_pairing, to_numpy
from ..compute import Compute, device_for, resolve
from ..embeddings import EmbeddingSet
from ..errors import ModgapError, NotFittedError
from .bank import activation, bank_topk_ids, log_mean_exp, mean_topk, top1_ids
from .retrieval import _as_tensor

__all__ = [
    "CORRECTIONS",
    "CSLS",
    "CandidateOffsets",
    "InvertedSoftmax",
    "QBNorm",
    "ScoreCorrection",
    "get_correction",
]


@dataclasses.dataclass(frozen=True)
class CandidateOffsets:
    """What corrected retrieval needs for one evaluated set.

    Text → image ranks the images of a text query ``j`` by ``s(j, i) - a_j image_offset[i]``
    (``a_j = text_active[j]``); image → text ranks the texts of an image query ``i`` by
    ``s(i, j) - a_i text_offset[j]`` (``a_i = image_active[i]``). ``None`` means every query is
    corrected.
    """

    image_offset: np.ndarray
    text_offset: np.ndarray
    text_active: np.ndarray | None = None
    image_active: np.ndarray | None = None


class ScoreCorrection(BaseEstimator):
    """Base class of the scoring-step corrections (scikit-learn conventions).

    ``__init__`` stores the parameters; :meth:`fit` stores the query banks (``image_bank_``
    for image → text, ``text_bank_`` for text → image, unit rows, float32); :meth:`offsets`
    gives, for an evaluated set, the :class:`CandidateOffsets` that
    :func:`~modgap.tasks.retrieval.retrieval_ranks` applies (``correction=``).
    """

    name: ClassVar[str] = "correction"

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "text_bank_")

    def _check_params(self) -> None:
        """Validate parameter values (called by :meth:`fit`)."""

    def _param_error(self, name: str, value: Any, expected: str) -> ModgapError:
        return ModgapError(f"correction '{self.name}': parameter {name}={value!r} ({expected})")

    def _check_int(self, name: str, low: int = 1) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise self._param_error(name, value, f"an integer >= {low}")

    def _check_positive(self, name: str) -> None:
        value = getattr(self, name)
        ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        )
        if not ok or not math.isfinite(value) or value <= 0:
            raise self._param_error(name, value, "a positive number")

    def fit(
        self,
        image_emb: Any,
        text_emb: Any = None,
        text_to_image: Any = None,
        *,
        compute: Compute | None = None,
    ) -> ScoreCorrection:
        """Store the query banks of the fit split.

        Parameters
        ----------
        image_emb : array (n_i, d) or EmbeddingSet
            Fit-split images: the bank of image → text queries (an :class:`EmbeddingSet`
            gives both modalities).
        text_emb : array (n_t, d)
            Fit-split texts: the bank of text → image queries.
        text_to_image : array (n_t,) of int, optional
            Checked when given; the banks need no pairs.
        compute : Compute, optional
            Accepted for the common interface (the banks are only stored).

        Returns
        -------
        self
        """
        self._check_params()
        if isinstance(image_emb, EmbeddingSet):
            if text_emb is not None:
                raise ModgapError("give either an EmbeddingSet or (image_emb, text_emb), not both")
            image_emb, text_emb, text_to_image = (
                image_emb.image_emb,
                image_emb.text_emb,
                image_emb.text_to_image,
            )
        if text_emb is None:
            raise ModgapError(f"correction '{self.name}': fit needs image_emb and text_emb")
        import torch

        cpu = torch.device("cpu")
        X = _as_tensor(image_emb, "image_emb", cpu, None, True)
        Y = _as_tensor(text_emb, "text_emb", cpu, X.shape[1], True)
        if text_to_image is not None:
            check_pairing(text_to_image, X.shape[0], Y.shape[0])
        self.image_bank_ = X.numpy()
        self.text_bank_ = Y.numpy()
        self.n_features_in_ = int(X.shape[1])
        return self

    def offsets(
        self,
        image_emb: Any,
        text_emb: Any,
        *,
        device: Any = None,
        compute: Compute | None = None,
    ) -> CandidateOffsets:
        """The offsets of an evaluated set (cosine scores: rows are L2-normalised).

        Parameters
        ----------
        image_emb : array (n_i, d)
            Images of the evaluated set (candidates of text → image, queries of image → text).
        text_emb : array (n_t, d)
            Its texts.
        device, compute
            Where to compute and the memory budget (as in retrieval).

        Returns
        -------
        CandidateOffsets
        """
        self._check_fitted()
        dev = device_for(compute, device, image_emb, text_emb)
        X = _as_tensor(image_emb, "image_emb", dev, self.n_features_in_, True)
        Y = _as_tensor(text_emb, "text_emb", dev, self.n_features_in_, True)
        import torch

        compute = resolve(compute)
        self.check_sizes(X.shape[0], Y.shape[0])
        with torch.no_grad():
            off = CandidateOffsets(
                image_offset=to_numpy(self.candidate_offsets(X, "image", compute)),
                text_offset=to_numpy(self.candidate_offsets(Y, "text", compute)),
            )
            k = self.activation_k
            if k is None:
                return off

            # QB-Norm's dynamic rule: bank top-k (activation set), each query's raw top-1
            def active(Q, C, modality):
                hubs = bank_topk_ids(self.bank(modality, dev), C, k, compute)
                return activation(to_numpy(hubs), to_numpy(top1_ids(Q, C, compute)), C.shape[0])

            return dataclasses.replace(
                off, text_active=active(Y, X, "image"), image_active=active(X, Y, "text")
            )

    #: candidates per bank query in QB-Norm's activation set; ``None``: every query is
    #: corrected (``a_q = 1``)
    @property
    def activation_k(self) -> int | None:
        return None

    def check_sizes(self, n_images: int, n_texts: int) -> None:
        """Refuse an evaluated set of ``n_images`` images and ``n_texts`` texts the fitted
        correction cannot score (one line), before any offset is computed; both routes call
        it."""
        self._check_fitted()

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(image_emb, text_emb) "
                "on the fit split first"
            )

    def bank(self, candidates: str, device: Any = None) -> Any:
        """The query bank scored against candidates of modality ``candidates`` (``"image"``:
        the text bank of text → image; ``"text"``: the image bank), a float32 tensor."""
        import torch

        rows = self.text_bank_ if candidates == "image" else self.image_bank_
        return torch.from_numpy(rows).to(device or "cpu")

    def candidate_offsets(self, C: Any, candidates: str, compute: Compute | None = None) -> Any:
        r"""``o(c)`` of a block of candidates: one float64 per row of ``C``.

        The per-candidate step of both routes: :meth:`offsets` calls it on every candidate
        of an evaluated set at once, the streamed retrieval
        (:mod:`modgap.stream.corrections`) on each block of each shard. The value of a row
        depends on that row and the bank only (:mod:`modgap.tasks.bank`), so the two agree
        bit for bit.

        Parameters
        ----------
        C : float32 tensor (n, d)
            Candidate rows, prepared as retrieval prepares them (unit rows).
        candidates : {"image", "text"}
            Their modality (the bank is that of the queries of the other one).
        compute : Compute, optional
            Memory budget of the float64 score blocks.

        Returns
        -------
        float64 tensor (n,)
        """
        import torch

        with torch.no_grad():
            return self._block_offsets(C, self.bank(candidates, C.device), resolve(compute))

    def _block_offsets(self, C: Any, bank: Any, compute: Compute) -> Any:
        raise NotImplementedError


class CSLS(ScoreCorrection):
    r"""Cross-domain similarity local scaling (Conneau et al., ICLR 2018).

    .. math:: \mathrm{CSLS}(q, c) = 2 \cos(q, c) - r_T(q) - r_S(c), \qquad
              r_S(c) = \frac1k \sum_{q' \in N_k^B(c)} \cos(q', c)

    with :math:`N_k^B(c)` the ``k`` bank queries nearest to candidate ``c`` (the bank: the
    query modality of the fit split). :math:`r_T(q)`, the mean cosine of ``q`` to its ``k``
    nearest candidates, is one constant per query and does not change its ranking; ranks are
    computed from :math:`\cos(q, c) - r_S(c)/2`, i.e. ``o(c) = r_S(c) / 2``. The paper uses
    ``k = 10``.

    Parameters
    ----------
    k : int
        Bank neighbours averaged per candidate (at most the bank size).
    """

    name = "csls"

    def __init__(self, k: int = 10):
        self.k = k

    def _check_params(self) -> None:
        self._check_int("k")

    def check_sizes(self, n_images: int, n_texts: int) -> None:
        super().check_sizes(n_images, n_texts)
        for bank, what in ((self.text_bank_, "texts"), (self.image_bank_, "images")):
            if self.k > bank.shape[0]:
                raise ModgapError(
                    f"CSLS k={self.k} is larger than the {bank.shape[0]} bank {what}; "
                    f"use k <= {bank.shape[0]}"
                )

    def _block_offsets(self, C, bank, compute):
        return mean_topk(C, bank, int(self.k), compute) / 2


class InvertedSoftmax(ScoreCorrection):
    r"""Inverted softmax over a query bank (Smith et al., ICLR 2017).

    .. math:: P(c \mid q) = \frac{e^{\beta s(q, c)}}{\sum_{q' \in B} e^{\beta s(q', c)}}

    normalises each candidate over the bank queries ``B`` (the query modality of the fit split)
    instead of each query over the candidates, so a candidate close to every query (a hub) is
    scored down. Ranked through :math:`\frac1\beta \log P = s(q, c) - o(c)` with
    :math:`o(c) = \frac1\beta \log \frac1{|B|} \sum_{q' \in B} e^{\beta s(q', c)}` (the
    ``1/|B|`` is one constant for all candidates). Smith et al. fit β on their training
    dictionary; the default is the QB-Norm code's ``β = 20``.

    Parameters
    ----------
    beta : float
        Inverse temperature, > 0. As β → 0 the offset tends to the mean bank cosine of the
        candidate, as β → ∞ to its largest.
    """

    name = "inverted-softmax"

    def __init__(self, beta: float = 20.0):
        self.beta = beta

    def _check_params(self) -> None:
        self._check_positive("beta")

    def _block_offsets(self, C, bank, compute):
        return log_mean_exp(C, bank, float(self.beta), compute)


class QBNorm(ScoreCorrection):
    r"""Querybank normalisation with the dynamic inverted softmax (Bogolin et al., CVPR 2022).

    What is implemented, for one direction (queries of one modality, candidates ``G`` of the
    other; the bank ``B``: fit-split queries of the same modality as the queries), as in the
    paper's §3 and its official code (``ioanacroi/qb-norm``, ``dynamic_inverted_softmax.py``):

    1. **Activation set** :math:`\mathcal{A} = \bigcup_{b \in B} \mathrm{top}_k(b; G)`: the
       evaluated candidates that are among the ``k`` nearest of at least one bank query (the
       bank is scored against the *evaluated* candidates). The paper and its code use
       ``k = 1``.
    2. For each query ``q``, its top-1 candidate :math:`g^* = \arg\max_g s(q, g)` by the raw
       similarity. If :math:`g^* \in \mathcal{A}` (the query lands on a hub) its row is scored
       by the inverted softmax over the bank,
       :math:`e^{\beta s(q, g)} / \sum_{b \in B} e^{\beta s(b, g)}`; otherwise by the raw
       similarity :math:`s(q, g)`. Rows are ranked independently, so each row's ranking is
       that of ``s(q, g) - a_q o(g)`` with ``o`` the :class:`InvertedSoftmax` offset and
       :math:`a_q = [g^* \in \mathcal{A}]`.

    Top-k and top-1 are exact with ties to the lower candidate index (the rule of
    :mod:`modgap._ties`; the official code takes ``numpy.argsort``'s order). Default β = 20
    (the official code's default).

    The ``text_active`` / ``image_active`` masks of the returned :class:`CandidateOffsets`
    say which queries were normalised.

    Parameters
    ----------
    k : int
        Candidates per bank query in the activation set.
    beta : float
        Inverse temperature of the inverted softmax, > 0.
    """

    name = "qb-norm"

    def __init__(self, k: int = 1, beta: float = 20.0):
        self.k = k
        self.beta = beta

    def _check_params(self) -> None:
        self._check_int("k")
        self._check_positive("beta")

    @property
    def activation_k(self) -> int | None:
        return int(self.k)

    def check_sizes(self, n_images: int, n_texts: int) -> None:
        super().check_sizes(n_images, n_texts)
        for n, what in ((n_images, "images"), (n_texts, "texts")):
            if self.k > n:
                raise ModgapError(
                    f"QB-Norm k={self.k} is larger than the {n} {what} to retrieve "
                    f"from; use k <= {n}"
                )

    def _block_offsets(self, C, bank, compute):
        return log_mean_exp(C, bank, float(self.beta), compute)


#: every score correction by name (the bench's ``--corrections`` and :func:`get_correction`)
CORRECTIONS: dict[str, type[ScoreCorrection]] = {
    cls.name: cls for cls in (CSLS, InvertedSoftmax, QBNorm)
}


def get_correction(name: str, **params: Any) -> ScoreCorrection:
    """A new, unfitted score correction by name, e.g. ``get_correction("csls", k=10)``."""
    if name not in CORRECTIONS:
        raise ModgapError(
            f"unknown score correction '{name}' (choose one of: {', '.join(CORRECTIONS)})"
        )
    return CORRECTIONS[name](**params)
