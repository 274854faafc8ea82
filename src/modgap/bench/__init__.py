"""The gap benchmark (``modgap bench``): reducers and score corrections × tasks × gap measures
over repeated random splits, with intervals, paired differences and verdicts.

``protocol`` runs it; ``stats`` holds the intervals and verdict lines. The document it returns
is written by :func:`modgap.report.write_bench` (``results.json`` and ``report.html``).
"""

from .protocol import VERDICT_METRICS, run_bench
from .rows import check_options, reducer_names
from .stats import LEVEL, interval, is_evidence, not_evidence, paired, summarize, verdict

__all__ = [
    "LEVEL",
    "VERDICT_METRICS",
    "check_options",
    "interval",
    "is_evidence",
    "not_evidence",
    "paired",
    "reducer_names",
    "run_bench",
    "summarize",
    "verdict",
]
