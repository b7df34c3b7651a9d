"""Scheduling: repeating tasks on cron schedules, delayed tasks, and the sweeper.

- ``cron``: cron expressions: valid or not, and when they fire next (across DST changes).
- ``repeating``: a repeating task's rules (valid row, next run, ``schedule_task``); no model
  needed, so ``cq.models`` uses them.
- ``firing``: firing the repeating tasks that are due, exactly once, and releasing delayed
  tasks (countdown, eta) as they come due.
- ``scheduler``: the loop that fires and sweeps, in a thread of ``cq_runworker`` or alone
  (``cq_scheduler``); one at a time works, under a Redis ``lease``.
- ``lease``: the scheduler's leader lease in Redis.
- ``sweeper``: what no single worker can see: tasks of dead workers (LOST), expired results,
  old worker rows; it also takes the queues' minute ``sampling``.
- ``sampling``: a sample of each queue each minute (depth, oldest wait, running, finished), for
  the queues page's charts and the JSON API.
"""
