"""Every change of a task's status, and what follows it: one owner per kind of transition.

Only the functions of this package write ``status``::

    PENDING ──launch/submit──▶ QUEUED ──claim──▶ RUNNING ──succeed──▶ SUCCESS, or WAITING
    RETRY (when due) ──claim──▶ RUNNING        RUNNING ──fail──▶ FAILURE, or RETRY
    RUNNING ──release──▶ QUEUED (claimed, never started)
    RUNNING ──lose──▶ LOST, or RETRY (its process died, or its transaction did not commit)
    WAITING ──settle──▶ SUCCESS, INCOMPLETE (FAILURE for a pipeline)
    anything unfinished ──revoke──▶ REVOKED    FAILURE, LOST ──retry_now──▶ QUEUED
    retry from the failed step: a failed row ──requeue──▶ QUEUED (or PENDING after its link),
                                its failed parents ──reopen──▶ WAITING

- ``claims``: QUEUED (or a due RETRY) → RUNNING, then admitted under the task's limits.
- ``queueing``: → QUEUED: launch, submit, retry now, due retries; and back from RUNNING for
  tasks claimed but never started (release, put back).
- ``outcomes``: a run's end: RUNNING → SUCCESS, WAITING, FAILURE, RETRY or LOST.
- ``settling``: a waiting parent's end (WAITING → SUCCESS, INCOMPLETE or FAILURE), and what
  follows every final status.
- ``revoking``: anything unfinished → REVOKED.
- ``reopening``: retry from the failed step (``cq.workflows.retrying`` decides which rows):
  failed rows → QUEUED or PENDING, their failed parents → WAITING, each failed attempt kept in
  the row's ``history``.

**Fencing.** Each claim adds one to the row's ``attempt``. Every later write of that run
(its outcome, its progress and fields in ``cq.engine.metadata``) is conditional on
``status = RUNNING AND attempt = n``, so a run that was declared LOST and claimed again
(a zombie) can never overwrite the newer attempt. A write that matches no row raises
``outcomes.Stale``: the run's outcome is somebody else's to record now.

**The database's clock.** A claim stamps ``started`` with ``Now()``; heartbeats and the
sweeper's cutoff use it too (``cq.workers.heartbeat``, ``cq.scheduling.sweeper``). Times
computed here use ``cq.engine.clock``, corrected by what each claim returns.

**What follows a final status** (``settling.follow``) is written once: errbacks once it
commits, chained tasks queued, the waiting parent settled. Inside
``settling.settling_at_end()`` (a batch) parents are settled at the end, once each, in
primary-key order, so that two batches never lock the same parents in opposite orders.
"""
