"""Metrics for Prometheus, computed from the database, so they are right with any number of
worker processes and any number of scrapers.

- ``tally``: the counters and histograms of finished tasks, kept in ``Tally`` rows that the
  sweeper and each scrape advance, so they never go down when rows are deleted.
- ``exposition``: those, and the gauges of what is true now (each queue's depth, oldest wait,
  running tasks, workers, controls: ``cq.engine.queues.overview``, read at scrape time), as
  Prometheus's text format, with the optional ``prometheus-client``
  (``pip install 'cq[prometheus]'``); the only module here that needs it.

The view that serves them is ``cq.web.metrics``.
"""
