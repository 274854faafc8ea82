"""How one bench row is planned and labelled (both routes): which split its reducer is fitted
on, what that means for a zero-shot set (class prompts as texts, the same in every split), and
how many rows of each modality its gap measures rest on (:data:`.stats.MIN_ROWS`); and which
rows there are (the checks of the options)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._lists import name_list
from ..embeddings import EmbeddingSet
from ..errors import ModgapError
from ..reducers import REDUCERS, get_reducer
from ..tasks.scoring import CORRECTIONS
from .stats import MIN_ROWS

__all__ = [
    "check_options",
    "correction_record",
    "fewest_rows",
    "plan_row",
    "reducer_names",
    "sample_rows",
    "separability_skip",
    "zero_shot",
]


def plan_row(
    name: str, params: dict, transductive: bool, zero_shot: bool = False
) -> tuple[Any, dict]:
    """``(unfitted reducer, or None for "none"; row record)``: the one rule of both benches
    for which split a reducer is fitted on (``fitted_on["images"]``: the evaluated one, when
    transductive or when it has no out-of-sample extension) and how its row is named.

    ``zero_shot``: the texts are the class prompts, the same in every split, so the reducer is
    fitted on all of them and they are scored in every split (``fitted_on["prompts"] = "all"``,
    ``scored_on_fitted_rows`` true)."""
    if name == "none":
        row = {"kind": "identity", "protocol": "identity", "params": {}, "fitted_on": None}
        return None, {**row, "scored_on_fitted_rows": False}
    reducer = get_reducer(name, **params)
    on_eval = transductive or not reducer.supports_out_of_sample
    protocol = "held-out"
    if transductive:
        protocol = "transductive"
    elif on_eval:
        protocol = "transductive (no out-of-sample extension)"
    split = "evaluated" if on_eval else "fit"
    fitted_on = {"images": split, "prompts": "all"} if zero_shot else {"images": split}
    if not zero_shot:
        fitted_on["texts"] = split  # captions follow their image
    row = {"kind": "reducer", "protocol": protocol, "params": reducer.get_params()}
    return reducer, {**row, "fitted_on": fitted_on, "scored_on_fitted_rows": on_eval or zero_shot}


def correction_record(corr: Any, transductive: bool) -> dict:
    """The fields every score-correction row states, on both routes: what it is, its
    parameters, and whether it scores the rows its bank came from."""
    return {
        "kind": "correction",
        "protocol": "transductive" if transductive else "held-out",
        "params": corr.get_params(),
        "scored_on_fitted_rows": transductive,
    }


def zero_shot(emb: EmbeddingSet) -> bool:
    """Whether the bench scores ``emb``'s class prompts as its texts (no captions)."""
    return not emb.has_texts and emb.class_text_emb is not None


def sample_rows(reduced: EmbeddingSet) -> dict[str, int]:
    """Rows of each modality the gap measures of one split compare."""
    scored = reduced.prompts_as_texts()
    texts = "texts" if reduced.has_texts or reduced.class_text_emb is None else "prompts"
    return {"images": int(scored.n_images), texts: int(scored.n_texts)}


def fewest_rows(row: dict) -> int | None:
    """Fewest rows of a modality the row's gap measures rest on (its first split's)."""
    sample = row.get("sample")
    return min(sample.values()) if sample else None


def separability_skip(row: dict, zero_shot: bool) -> str | None:
    """Why linear separability is not measured on this row, or ``None``."""
    fewest = fewest_rows(row)
    if fewest is not None and fewest < MIN_ROWS:
        return (
            f"few rows: {fewest} rows of a modality per split (fewer than {MIN_ROWS}); the "
            "probe would hold out a handful of them"
        )
    if zero_shot and row["kind"] == "reducer":
        return (
            "the reducer was fitted on every class prompt: a probe's held-out prompts are not "
            "held out"
        )
    return None


def reducer_names(reducers: Sequence[str] | str | None) -> list[str]:
    """Registry names (and ``none``) chosen by ``reducers``; unknown names are an error."""
    if reducers is None:
        return ["none", *REDUCERS]
    names = name_list(reducers) or []  # "a,b" or a list, as on the command line
    unknown = [r for r in names if r != "none" and r not in REDUCERS]
    if unknown:
        raise ModgapError(
            f"unknown reducer(s) {', '.join(unknown)}; choose from none, {', '.join(REDUCERS)}"
        )
    if not names:
        raise ModgapError("no reducer selected")
    return names


def check_options(
    reducers: Sequence[str] | str | None,
    corrections: Sequence[str] | None,
    reducer_params: dict[str, dict] | None,
    repeats: int,
    test_fraction: float,
) -> tuple[list[str], list[str]]:
    """The benchmark's reducer and score-correction rows, after every check of the options
    (a one-line :class:`ModgapError`): callers run it before reading any data."""
    names = reducer_names(reducers)
    correction_names = _correction_names(corrections)
    for key in reducer_params or {}:
        if key not in names:
            raise ModgapError(f"parameters given for '{key}', which is not benchmarked")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ModgapError(f"repeats must be a positive integer, got {repeats!r}")
    if not 0 < test_fraction < 1:
        raise ModgapError(f"test_fraction must be in (0, 1), got {test_fraction}")
    return names, correction_names


def _correction_names(corrections: Sequence[str] | str | None) -> list[str]:
    names = name_list(corrections)
    if not names:
        return []
    unknown = [c for c in names if c not in CORRECTIONS]
    if unknown:
        raise ModgapError(
            f"unknown score correction(s) {', '.join(unknown)}; "
            f"choose from {', '.join(CORRECTIONS)}"
        )
    return names
