"""The Task admin: a read-only list and detail page with links through the tree."""

from __future__ import annotations

import pytest
from django.urls import reverse

from cq.models import Task
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
