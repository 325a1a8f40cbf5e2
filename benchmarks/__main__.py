"""``python -m benchmarks``: every benchmark in turn; see :mod:`benchmarks.run_all`."""

from benchmarks.run_all import main

main()
