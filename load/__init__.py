"""pushhub's load tool: ``python -m load <scenario> ...``. Never imported by ``pushhub``.

Pure logic (histogram, ledger, schedule, verdict, report, options, frames, wire) has no
I/O and is unit-tested; the harness, workers, publishers and processes do the I/O.
"""
