"""Metrics for Prometheus, computed from the database, so they are right with any number of
worker processes and any number of scrapers.

- ``tally``: the counters and histograms of finished tasks, kept in ``Tally`` rows that the
  sweeper and each scrape advance, so they never go down when rows are deleted.
- ``gauges``: what is true now (queue depth, oldest wait, running tasks, workers alive, paused
  and capped queues), read at scrape time.
- ``exposition``: both as Prometheus's text format, with the optional ``prometheus-client``
  (``pip install 'cq[prometheus]'``); the only module here that needs it.

The view that serves them is ``cq.web.metrics``.
"""
