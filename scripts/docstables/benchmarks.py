"""Producers and tables of the timing benchmarks of ``benchmarks/`` (group ``benchmarks``)."""
