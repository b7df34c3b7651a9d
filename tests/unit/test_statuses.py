"""TaskStatus is the one place that says what the statuses are and which groups they form; every
map keyed by status elsewhere must cover every member, and each test below names the map to mend
when one is added."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cq import backends
from cq.management.commands.cq_maintenance import CLEARABLE
from cq.models import ACTIVE, DONE, ERROR, RETRYABLE, REVOCABLE, TaskStatus

CSS = Path(backends.__file__).parent / "static" / "cq" / "dashboard.css"


def test_django_cqs_statuses_keep_their_groups_and_the_groups_agree():
    # django-cq's ten statuses, where django-cq had them; a status added later joins by its properties.
    finished = {TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.INCOMPLETE, TaskStatus.LOST, TaskStatus.REVOKED}
    assert finished <= DONE
    assert DONE.isdisjoint({TaskStatus.PENDING, TaskStatus.RETRY, TaskStatus.QUEUED, TaskStatus.RUNNING,
                            TaskStatus.WAITING})
    assert {TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.WAITING} <= ACTIVE
    assert TaskStatus.RETRY not in ACTIVE
    assert {TaskStatus.FAILURE, TaskStatus.LOST} <= RETRYABLE <= ERROR
    assert ERROR == DONE - {TaskStatus.SUCCESS}
    assert REVOCABLE == set(TaskStatus) - DONE
    assert ACTIVE <= REVOCABLE
    assert all(status.final == (status in DONE) for status in TaskStatus)


def test_every_status_has_a_django_status():
    missing = set(TaskStatus) - set(backends.STATUSES)
    assert not missing, f"cq.backends.STATUSES has no Django status for {sorted(missing)}"
    assert {status for status in TaskStatus if backends.STATUSES[status] in backends.FINISHED} == DONE
    assert set(backends.ENDED_WITHOUT_ERROR) == ERROR - {TaskStatus.FAILURE}, (
        "cq.backends.ENDED_WITHOUT_ERROR names the exception of each failed status but FAILURE")


def test_maintenance_can_clear_every_final_status_and_pending_ones():
    missing = (DONE | {TaskStatus.PENDING}) - set(CLEARABLE.values())
    assert not missing, f"cq_maintenance's CLEARABLE has no flag for {sorted(missing)}"


def test_the_dashboard_has_a_colour_for_every_status():
    coloured = {code for selectors, body in re.findall(r"([^{}]*)\{([^}]*)\}", CSS.read_text())
                if re.search(r"(^|[;\s])color:", body) for code in re.findall(r"\.status-([A-Z])\b", selectors)}
    missing = {status for status in TaskStatus if status.value not in coloured}
    assert not missing, f"cq/static/cq/dashboard.css has no colour for {sorted(missing)}"


@pytest.mark.django_db
def test_the_dashboard_script_reads_the_statuses_from_the_page(admin_client):
    page = admin_client.get("/cq/").content.decode()
    assert '<script id="cq-statuses" type="application/json">' in page
    for status in TaskStatus:
        assert f'"{status.value}": "{status.label}"' in page
    script = (CSS.parent / "dashboard.js").read_text()
    assert not re.search(r"\b[A-Z]: \"(Pending|Success)\"|\"FSILE\"", script), "dashboard.js copies the statuses"
