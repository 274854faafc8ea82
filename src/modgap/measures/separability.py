"""Linear separability of the two modalities (a probe for the modality gap)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import prepare_rows
from ..errors import InputError
from ._common import canonical_order, seeded_subset

__all__ = ["DEFAULT_MAX_PER_MODALITY", "linear_separability", "probe_accuracy"]

#: rows per modality used to fit the probe; 20k x 2 x 512 fits in seconds with L-BFGS.
DEFAULT_MAX_PER_MODALITY = 20_000


def _stratified_split(n: int, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean test mask over ``n`` rows of one class: ``round(n * test_fraction)`` rows, at
    least one on each side."""
    n_test = min(max(1, round(n * test_fraction)), n - 1)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=n_test, replace=False)] = True
    return mask


def probe_accuracy(
    X_train: np.ndarray,
    Y_train: np.ndarray,
    X_test: np.ndarray,
    Y_test: np.ndarray,
    C: float = 1.0,
    counts: bool = False,
) -> Any:
    """Balanced accuracy, on the test rows, of the image-vs-text logistic probe fitted on the
    training rows (the probe of :func:`linear_separability`, for callers that split
    themselves, e.g. to fit a reducer on the probe's training part only). ``counts=True``
    returns ``(balanced accuracy, [(hits, rows) of the image test rows, of the text ones]``,
    what an interval of the estimate needs."""
    from sklearn.linear_model import LogisticRegression

    Z = np.vstack([X_train, Y_train])
    t = np.r_[np.zeros(len(X_train)), np.ones(len(Y_train))]
    clf = LogisticRegression(C=C, tol=1e-8, max_iter=5000, class_weight="balanced").fit(Z, t)
    hits = [
        (int(np.sum(clf.predict(np.asarray(part)) == label)), len(part))
        for label, part in ((0, X_test), (1, Y_test))
    ]
    balanced = float(np.mean([h / n for h, n in hits if n]))
    return (balanced, hits) if counts else balanced


def linear_separability(
    X: Any,
    Y: Any,
    test_fraction: float = 0.3,
    max_per_modality: int | None = DEFAULT_MAX_PER_MODALITY,
    C: float = 1.0,
    seed: int = 0,
    counts: bool = False,
) -> Any:
    r"""Held-out balanced accuracy of a logistic regression telling images from texts.

    Label images 0 and texts 1, split each modality with the same ``test_fraction``
    (stratified), fit :class:`sklearn.linear_model.LogisticRegression` (L2, ``C``, L-BFGS run to
    a tight tolerance, intercept unpenalised, classes weighted by their inverse frequency) on
    unit rows without feature scaling, and report the **balanced accuracy** on the held-out rows
    (the mean of the two per-modality recalls). Chance is 0.5 whatever the class balance — 848
    images against 10 class prompts included, where plain accuracy would read 0.988 for a probe
    that says "image" every time; 1.0 means the modalities are linearly separable, which CLIP's
    modality gap makes them (Liang et al. 2022; Shi et al. 2023, "Towards Understanding the
    Modality Gap in CLIP").

    The probe's held-out rows must be new to everything it relies on: a gap reducer fitted on
    them (transductively) makes the probe's training and test parts mirror each other and the
    accuracy reads *below* chance; :func:`modgap.bench.run_bench` therefore fits the reducer on
    the probe's own training part when it measures separability transductively.

    Invariances: the L2-penalised objective is rotation-equivariant and no per-feature scaling
    is done, so a common rotation of both modalities leaves the prediction unchanged up to the
    solver's tolerance. The subsample and the split are drawn with ``seed`` in a canonical row
    order (by cosine to the modality means, see :func:`~modgap.measures._common.canonical_order`),
    so reordering the pairs selects the same rows.

    Parameters
    ----------
    X, Y : array (n, d), (m, d)
        Image and text embeddings (rows L2-normalised first). No pairing is used.
    test_fraction : float
        Held-out share of each modality, in (0, 1).
    max_per_modality : int or None
        Cap on rows per modality (a seeded subsample; default 20,000) to bound the fit time;
        ``None`` uses everything.
    C : float
        Inverse L2 regularisation strength.
    seed : int
        Seed of the subsample and of the split.
    counts : bool
        Also return the per-modality ``(hits, test rows)`` (see :func:`probe_accuracy`).

    Returns
    -------
    float
        Held-out balanced accuracy in [0, 1]; chance 0.5.
    """
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    X = prepare_rows(X, "image_emb", min_rows=2, unit="exact", dtype=np.float64)
    Y = prepare_rows(Y, "text_emb", dim=X.shape[1], min_rows=2, unit="exact", dtype=np.float64)
    rng = np.random.default_rng(seed)
    parts, test = [], []
    for label, (A, B) in enumerate(((X, Y), (Y, X))):
        A = A[seeded_subset(A, B, max_per_modality, seed + label)]
        A = A[canonical_order(A, B)]
        parts.append(A)
        test.append(_stratified_split(A.shape[0], test_fraction, rng))
    X, Y = parts
    tx, ty = test
    return probe_accuracy(X[~tx], Y[~ty], X[tx], Y[ty], C=C, counts=counts)
