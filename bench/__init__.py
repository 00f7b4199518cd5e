"""``make bench``: throughput, latency, event-to-chart lag and rebuild speed of the
platform on the development machine, each figure held against a physical baseline
measured in the same run. See ``bench/README.md`` and :mod:`bench.run`.
"""
