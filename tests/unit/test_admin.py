"""The Task admin: a read-only list and detail page with links through the tree."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from cq.models import RepeatingTask, Task, schedule_task
from cq.scheduling import firing
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(user)
    return client


def test_list_filters_by_status_and_searches_by_function(staff_client, drain):
    tasks.logs_with_subtask.delay()
    tasks.failing.delay()
    drain()
    url = reverse("admin:cq_task_changelist")
    def listed(**query):
        page = staff_client.get(url, query).content.decode()
        return {name for name in ("failing", "logs_with_subtask", "logs_alone")
                if f'field-func_name">tests.testapp.tasks.{name}<' in page}

    assert listed() == {"failing", "logs_with_subtask", "logs_alone"}
    assert listed(status__exact="F") == {"failing"}
    assert listed(q="logs_alone") == {"logs_alone"}


def test_detail_shows_result_logs_and_tree_links(staff_client, drain):
    top = tasks.logs_with_subtask.delay()
    drain()
    child = top.subtasks.get()
    page = staff_client.get(reverse("admin:cq_task_change", args=[top.pk])).content.decode()
    assert "Second log from task_a." in page and "Log from task_b." in page
    assert reverse("admin:cq_task_change", args=[child.pk]) in page
    page = staff_client.get(reverse("admin:cq_task_change", args=[child.pk])).content.decode()
    assert reverse("admin:cq_task_change", args=[top.pk]) in page
    assert "&quot;b&quot;" in page or '"b"' in page


def test_detail_shows_error_and_traceback(staff_client, drain):
    task = tasks.failing.delay("shown in admin")
    drain()
    page = staff_client.get(reverse("admin:cq_task_change", args=[task.pk])).content.decode()
    assert "shown in admin" in page and "Traceback" in page


def test_tasks_cannot_be_added_or_edited(staff_client):
    task = tasks.echo.delay()
    assert staff_client.get(reverse("admin:cq_task_add")).status_code == 403
    response = staff_client.post(reverse("admin:cq_task_change", args=[task.pk]), {"status": "S"})
    assert response.status_code == 403
    task.refresh_from_db()
    assert task.status == Task.STATUS_QUEUED


def repeating_form(**fields):
    data = {"func_name": "echo", "crontab": "30 3 * * *", "timezone": "UTC", "args": "[]", "kwargs": "{}",
            "enabled": "on", "coalesce": "on", "result_ttl": ""}
    data.update(fields)
    return data


def test_repeating_task_add_form_offers_registered_functions(staff_client):
    page = staff_client.get(reverse("admin:cq_repeatingtask_add")).content.decode()
    assert 'list="func_name-choices"' in page
    assert '<option value="tests.testapp.tasks.add">' in page


def test_repeating_task_is_created_from_the_admin_with_its_next_run(staff_client):
    response = staff_client.post(reverse("admin:cq_repeatingtask_add"), repeating_form(args='["x"]'))
    assert response.status_code == 302
    rt = RepeatingTask.objects.get(func_name="echo")
    assert (rt.args, rt.next_run.hour, rt.next_run.minute) == (["x"], 3, 30)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("crontab", "every day", "has 2 field(s); a crontab has 5"),
    ("crontab", "99 * * * *", "is not a valid crontab"),
    ("func_name", "os.system", "No task function is registered as &#x27;os.system&#x27;"),
    ("timezone", "Mars/Base", "not a known time zone"),
    ("args", "{\"a\": 1}", "must be a JSON list"),
    ("kwargs", "[1", "Enter a valid JSON"),
    # What the database, or a worker, could not take.
    ("args", "[NaN]", "The args hold NaN at [0]"),
    ("kwargs", '{"a": "\\u0000"}', "NUL character"),
    ("result_ttl", "2147483648", "result_ttl= takes a whole number of seconds"),
])
def test_repeating_task_form_shows_clear_errors(staff_client, field, value, message):
    response = staff_client.post(reverse("admin:cq_repeatingtask_add"), repeating_form(**{field: value}))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not RepeatingTask.objects.filter(func_name__in=["echo", "os.system"]).exists()


def test_a_list_filter_holding_nul_is_a_bad_request_not_a_database_error(staff_client):
    for name in ("cq_task", "cq_repeatingtask"):
        for query in ({"q": "\x00"}, {"func_name": "a\x00"}):
            assert staff_client.get(reverse(f"admin:{name}_changelist"), query).status_code == 400
    assert staff_client.get(reverse("admin:cq_task_changelist"), {"q": "echo"}).status_code == 200


def test_repeating_task_list_shows_next_runs_and_last_run_link(staff_client):
    rt = schedule_task(RepeatingTask, "0 12 * * *", tasks.echo, timezone="Europe/Paris")
    task = firing.launch(rt, timezone.now())
    page = staff_client.get(reverse("admin:cq_repeatingtask_changelist")).content.decode()
    assert page.count(" 12:00 CE") == 3  # three next runs, in the task's own zone (CET or CEST)
    assert reverse("admin:cq_task_change", args=[task.pk]) in page


def test_repeating_task_actions_run_now_disable_and_enable(staff_client):
    rt = schedule_task(RepeatingTask, "0 12 * * *", tasks.echo)
    url = reverse("admin:cq_repeatingtask_changelist")
    staff_client.post(url, {"action": "run_now", "_selected_action": [rt.pk]})
    rt.refresh_from_db()
    assert rt.last_task.status == Task.STATUS_QUEUED
    staff_client.post(url, {"action": "disable", "_selected_action": [rt.pk]})
    rt.refresh_from_db()
    assert (rt.enabled, rt.next_run) == (False, None)
    staff_client.post(url, {"action": "enable", "_selected_action": [rt.pk]})
    rt.refresh_from_db()
    assert rt.enabled and rt.next_run.hour == 12


def test_detail_shows_progress_and_fields(staff_client):
    task = tasks.echo.using(fields={"customer": 42}).delay()
    Task.objects.filter(pk=task.pk).update(progress={"current": 2, "total": 8, "percent": 25.0, "message": "half"})
    page = staff_client.get(reverse("admin:cq_task_change", args=[task.pk])).content.decode()
    assert "2 of 8 (25.0%) half" in page
    assert "&quot;customer&quot;: 42" in page
