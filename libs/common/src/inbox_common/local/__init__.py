"""Running the platform on one machine: child processes, free ports, a local SecantusDB.

Used by ``inbox-ops dev`` (the local stack), by the tests and by the benchmarks, so that
all three start, watch and stop processes the same way.
"""
