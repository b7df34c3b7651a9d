"""The worker processes behind ``manage.py cq_runworker``.

- ``supervisor``: the process the command runs; starts N worker processes, watches and
  restarts them, beats for them, enforces hard time limits, shuts down gracefully.
- ``child``: a worker process's entry point, and its pipes to the supervisor.
- ``worker``: one process's loop: hear doorbells, claim, run (``cq.engine``), look in the
  database for what the doorbells missed.
- ``hooks``: what a worker tells whoever watches it.
- ``heartbeat``: the Worker rows and their heartbeats, by the database's clock.
"""
