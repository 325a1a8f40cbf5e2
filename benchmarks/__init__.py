"""rankplug's benchmarks (issue #6): stage overhead, angular-margin and triplet losses, memory over stages.

Run one with ``python -m benchmarks.<name>`` or all with ``python -m benchmarks``; each prints a table and writes
a JSON record with the machine details to ``benchmarks/results/``. See ``docs/performance.md``.
"""
