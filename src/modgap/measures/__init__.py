"""Gap measures: plain functions of arrays, one small module per family, and
:func:`measure_all` to run them on an :class:`~modgap.embeddings.EmbeddingSet`.

See ``docs/measures.md`` for every formula and its source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._lists import name_list
from .._resultdict import Results
from ..compute import Compute, resolve
from ..errors import ModgapError
from . import accumulators
from .accumulators import *  # noqa: F403 - the mergeable accumulators, listed in its __all__
from .alignment import alignment, cross_uniformity, uniformity
from .centroid import centroid_gap, per_dimension_gap
from .cosine import cosine_stats
from .frechet import frechet_distance
from .hubness import hubness, hubness_k, hubness_skip_reason
from .neighbours import mixed_neighbour_diagnostics
from .rmg import relative_modality_gap, rmg_no_information
from .separability import linear_separability

__all__ = [
    "MEASURES",
    "STREAM_ROUTES",
    "Measure",
    *accumulators.__all__,
    "alignment",
    "centroid_gap",
    "cosine_stats",
    "cross_uniformity",
    "frechet_distance",
    "hubness",
    "linear_separability",
    "measure_all",
    "mixed_neighbour_diagnostics",
    "per_dimension_gap",
    "relative_modality_gap",
    "rmg_no_information",
    "resolve_measures",
    "uniformity",
]


def _centroid(emb, seed, report, compute):
    out = centroid_gap(emb.image_emb, emb.text_emb)
    return {"centroid_gap": out["centroid_gap"], "centroid_cosine": out["centroid_cosine"]}


def _per_dimension(emb, seed, report, compute):
    out = per_dimension_gap(emb.image_emb, emb.text_emb)
    out.pop("gap_sq")
    return {"gap_dims_50": out["dims_50"], "gap_dims_90": out["dims_90"], "per_dimension": out}


def _separability(emb, seed, report, compute):
    return {"linear_separability": linear_separability(emb.image_emb, emb.text_emb, seed=seed)}


def _rmg(emb, seed, report, compute):
    return {
        "rmg": relative_modality_gap(emb.image_emb, emb.text_emb, emb.text_to_image),
        "rmg_chance": rmg_no_information(emb.image_emb, emb.text_emb),
    }


def _neighbours(emb, seed, report, compute):
    return mixed_neighbour_diagnostics(
        emb.image_emb,
        emb.text_emb,
        progress=lambda done, total: report(done / total),
        compute=compute,
        text_to_image=emb.text_to_image if _several_captions(emb) else None,
    )


def _several_captions(emb) -> bool:
    """Whether some image has several captions: then the sibling-excluding neighbour keys are
    given (with one caption per image they would repeat TIR and IMR)."""
    t2i = emb.text_to_image
    return t2i is not None and len(t2i) > 0 and int(np.bincount(t2i).max()) > 1


def _hubness(emb, seed, report, compute):
    k = hubness_k(emb.n_images, emb.n_texts)  # the streamed route's k too
    if k < 1:
        return {"skipped": {"hubness": hubness_skip_reason(emb.n_images, emb.n_texts)}}
    out = hubness(emb.image_emb, emb.text_emb, k=k, compute=compute)
    return {key: v for key, v in out.items() if key not in ("hubness_k", "hub_fraction")}


_HUBNESS_KEYS = tuple(
    f"{name}_{d}{suffix}"
    for d in ("t2i", "i2t")
    for name in ("hubness_skew", "antihub_share", "hub_occupancy", "hubness_max")
    for suffix in ("", "_chance")
)


def _frechet(emb, seed, report, compute):
    t = frechet_distance(emb.image_emb, emb.text_emb, terms=True)
    return {
        "frechet_distance": t["frechet_distance"],
        "frechet_centroid_term": t["centroid"],
        "frechet_covariance_term": t["covariance"],
    }


def _alignment(emb, seed, report, compute):
    return {"alignment": alignment(emb.image_emb, emb.text_emb, emb.text_to_image)}


def _uniformity(emb, seed, report, compute):
    X, Y = emb.image_emb, emb.text_emb
    nan = float("nan")
    return {
        "uniformity_image": uniformity(X, seed=seed, compute=compute) if X.shape[0] > 1 else nan,
        "uniformity_text": uniformity(Y, seed=seed, compute=compute) if Y.shape[0] > 1 else nan,
        "uniformity_cross": cross_uniformity(X, Y, seed=seed, compute=compute),
    }


def _cosine(emb, seed, report, compute):
    out = cosine_stats(emb.image_emb, emb.text_emb, emb.text_to_image, seed=seed, compute=compute)
    return {
        "matched_cosine_mean": out["matched"]["mean"],
        "matched_cosine_std": out["matched"]["std"],
        "unmatched_cosine_mean": out["unmatched"]["mean"],
        "unmatched_cosine_std": out["unmatched"]["std"],
        "matched_cosine": out["matched"],
        "unmatched_cosine": out["unmatched"],
    }


@dataclass(frozen=True)
class Measure:
    """One gap measure and its recipe on every route.

    Attributes
    ----------
    name : str
        The name ``--only`` takes.
    keys : tuple of str
        The flat result keys its runner produces, in report order.
    needs_pairs : bool
        Whether it needs image-text pairs (otherwise listed under ``skipped``).
    run : callable
        ``run(emb, seed, report, compute) -> dict``: the in-memory route.
    stream : str or None
        How :func:`modgap.stream.stream_measures` computes it on a source:
        ``"moments"`` exact from the one moment pass (its accumulator,
        :class:`~modgap.measures.accumulators.Moments`); ``"scan"`` a uniform query sample
        scored exactly against the complete pool (exact when the sample is the whole set, an
        estimate with its sample size and interval otherwise); ``"sample"`` fitted on a stated
        uniform sample; ``None``: not streamed, for the reason in ``stream_reason``.
    stream_reason : str
        Why a measure with ``stream=None`` is listed under ``skipped`` on a streamed route.
    """

    name: str
    keys: tuple[str, ...]
    needs_pairs: bool
    run: Callable[..., dict]
    stream: str | None
    stream_reason: str = ""

    def __post_init__(self) -> None:
        if self.stream not in STREAM_ROUTES:
            raise ValueError(f"measure {self.name}: stream must be one of {STREAM_ROUTES}")
        if self.stream is None and not self.stream_reason:
            raise ValueError(f"measure {self.name}: a measure that does not stream says why")


#: how a measure may run on a source (see :class:`Measure`)
STREAM_ROUTES = ("moments", "scan", "sample", None)

_COSINE_KEYS = (
    "matched_cosine_mean",
    "matched_cosine_std",
    "unmatched_cosine_mean",
    "unmatched_cosine_std",
    "matched_cosine",
    "unmatched_cosine",
)

#: name -> :class:`Measure`. Order = order of the report.
MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure("centroid", ("centroid_gap", "centroid_cosine"), False, _centroid, "moments"),
        Measure(
            "per_dimension",
            ("gap_dims_50", "gap_dims_90", "per_dimension"),
            False,
            _per_dimension,
            "moments",
        ),
        Measure("linear_separability", ("linear_separability",), False, _separability, "sample"),
        Measure("rmg", ("rmg", "rmg_chance"), True, _rmg, "moments"),
        Measure(
            "neighbours",
            ("itr", "tir", "tmr", "imr", "tir_excl_siblings", "imr_excl_siblings"),
            False,
            _neighbours,
            "scan",
        ),
        Measure(
            "frechet_distance",
            ("frechet_distance", "frechet_centroid_term", "frechet_covariance_term"),
            False,
            _frechet,
            "moments",
        ),
        Measure("hubness", _HUBNESS_KEYS, False, _hubness, "scan"),
        Measure("alignment", ("alignment",), True, _alignment, "moments"),
        Measure(
            "uniformity",
            ("uniformity_image", "uniformity_text", "uniformity_cross"),
            False,
            _uniformity,
            "scan",
        ),
        # mean, std and count exact from the moments; the quantiles on the query sample
        Measure("cosine", _COSINE_KEYS, True, _cosine, "moments"),
    )
}


def resolve_measures(only: Iterable[str] | str | None) -> list[str]:
    """Measure names (in report order) selected by ``only``: measure names or result keys;
    unknown names raise :class:`ModgapError` listing the valid ones."""
    if only is None:
        return list(MEASURES)
    only = name_list(only) or []  # "centroid,rmg" or a list, as ``--only`` takes them
    by_key = {key: m.name for m in MEASURES.values() for key in m.keys}
    chosen: set[str] = set()
    for raw in only:
        name = str(raw).strip()
        if name in MEASURES:
            chosen.add(name)
        elif name in by_key:
            chosen.add(by_key[name])
        else:
            raise ModgapError(
                f"unknown measure '{name}'; valid names: {', '.join(MEASURES)} "
                f"(or a result key such as {', '.join(k for k in by_key if k not in MEASURES)})"
            )
    if not chosen:
        raise ModgapError(f"no measure selected; valid names: {', '.join(MEASURES)}")
    return [name for name in MEASURES if name in chosen]


def measure_all(
    emb: Any,
    only: Iterable[str] | str | None = None,
    seed: int | None = None,
    progress: Callable[[str], None] | None = None,
    progress_fraction: Callable[[str, float], None] | None = None,
    compute: Compute | None = None,
) -> dict:
    """Run every gap measure on an :class:`~modgap.embeddings.EmbeddingSet`.

    Parameters
    ----------
    emb : EmbeddingSet
        The embeddings. Measures that need image-text pairs (``rmg``, ``alignment``,
        ``cosine``) run only when ``emb.has_pairs``; otherwise they are listed under
        ``skipped``.
    only : list of str or comma-separated str, optional
        Measure names (keys of :data:`MEASURES`: centroid, per_dimension, linear_separability,
        rmg, neighbours, frechet_distance, alignment, uniformity, cosine) or result keys (e.g.
        ``itr`` selects ``neighbours``). Unknown names raise :class:`ModgapError` listing the
        valid ones; asking explicitly for a pair measure on an unpaired set is an error too.
    seed : int, optional
        Seed of every subsample and split (separability, uniformity caps, unmatched sample);
        default: the compute context's.
    progress : callable, optional
        Called with each measure's name before it runs (for progress bars).
    progress_fraction : callable, optional
        Called as ``progress_fraction(name, fraction)`` during the long measures (the neighbour
        diagnostics, after every block of queries), for a finer bar.
    compute : Compute, optional
        Device, memory budget and seed (default: :func:`modgap.compute.current`).

    Returns
    -------
    dict
        Flat keys ``centroid_gap``, ``centroid_cosine``, ``gap_dims_50``, ``gap_dims_90``,
        ``linear_separability``, ``rmg`` with ``rmg_chance`` (its value when the pairs carry
        no information, :func:`~modgap.measures.rmg.rmg_no_information`), ``itr``, ``tir``,
        ``tmr``, ``imr``, the hubness keys (k from
        :func:`~modgap.measures.hubness.hubness_k`; skipped under 50 rows),
        ``frechet_distance``, ``alignment``, ``uniformity_image``, ``uniformity_text``,
        ``uniformity_cross``, ``matched_cosine_mean``/``_std``, ``unmatched_cosine_mean``/``_std``
        (floats; ``inf``/``nan`` kept as Python floats), plus nested ``per_dimension``,
        ``matched_cosine``, ``unmatched_cosine`` and, when something was left out, ``skipped``
        (name -> reason). Write it with :func:`modgap.provenance.jsonable` for strict JSON.
    """
    compute = resolve(compute, seed=seed)
    seed = compute.seed
    if not emb.has_texts:  # a zero-shot set: the images against the class prompts
        emb = emb.prompts_as_texts()
    names = resolve_measures(only)
    if only is not None and not emb.has_pairs:
        paired = [n for n in names if MEASURES[n].needs_pairs]
        if paired:
            raise ModgapError(
                f"{', '.join(paired)} need(s) image-text pairs and the set has none "
                "(give a pairing, e.g. --pairs FILE, or equal counts paired row by row)"
            )
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if MEASURES[name].needs_pairs and not emb.has_pairs:
            skipped[name] = "needs image-text pairs"
            continue

        def report(fraction: float, name: str = name) -> None:
            if progress_fraction is not None:
                progress_fraction(name, fraction)

        if progress is not None:
            progress(name)
        out = MEASURES[name].run(emb, seed, report, compute)
        skipped.update(out.pop("skipped", {}))  # a measure that does not apply to these data
        results.update(out)
    if skipped:
        results["skipped"] = skipped
    return Results(results)  # a dict; shows as one short line in a notebook
