"""A task model of the project's own (CQ_TASK_MODEL = customtask.OwnedTask, with an owner and an
organisation). `make test` runs this file alone with tests.settings_custom; the rest of the suite
runs on cq.Task."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from cq.models import get_task_model
from tests.testapp import tasks

pytestmark = [pytest.mark.custom_model, pytest.mark.django_db(transaction=True)]


def test_cq_uses_the_projects_task_model(owned):
    from cq.models import Task

    assert get_task_model() is owned
    assert Task._meta.swapped == "customtask.OwnedTask"


def test_typed_columns_are_set_with_fields_and_found_with_a_plain_filter(owned, drain):
    ann, bob = User.objects.create(username="ann"), User.objects.create(username="bob")
    mine = tasks.add.using(fields={"owner": ann, "organisation": "acme", "ticket": 7}).delay(1, 2)
    theirs = tasks.add.using(fields={"owner_id": bob.pk}).delay(3, 4)
    revoked = tasks.add.using(fields={"owner": ann}).delay(0, 0)
    revoked.revoke()
    assert isinstance(mine, owned)
    assert drain() == 2
    assert list(owned.objects.filter(owner=ann).exclude(status=owned.STATUS_REVOKED)) == [mine]
    assert list(ann.cq_tasks.filter(status=owned.STATUS_SUCCESS)) == [mine]
    mine.refresh_from_db()
    assert (mine.result, mine.organisation, mine.fields) == (3, "acme", {"ticket": 7})
    assert theirs.wait().owner == bob


def test_subtasks_chains_and_reruns_keep_to_the_projects_model(owned, drain):
    ann = User.objects.create(username="ann")
    parent = tasks.subtask_then_chain.using(fields={"owner": ann}).delay()
    drain()
    parent.refresh_from_db()
    assert parent.status == owned.STATUS_SUCCESS
    assert all(isinstance(t, owned) for t in parent.subtasks.all())
    again = parent.rerun()
    assert (again.owner, type(again)) == (ann, owned)


def test_retry_from_the_failed_step_keeps_to_the_projects_model(owned, drain):
    from tests.testapp.models import Record

    Record.objects.create(key="broken:own:b")
    top = tasks.mendable_tree.using(fields={"organisation": "acme"}).delay("own")
    drain()
    failed = owned.objects.get(args=["own:b"])
    assert (top.wait().status, failed.status) == (owned.STATUS_INCOMPLETE, owned.STATUS_FAILURE)
    Record.objects.filter(key="broken:own:b").delete()
    top.retry_failed()
    assert isinstance(top, owned) and top.status == owned.STATUS_WAITING
    drain()
    failed.refresh_from_db()
    assert top.wait().status == owned.STATUS_SUCCESS
    assert (failed.retries, failed.history[0]["status"]) == (1, owned.STATUS_FAILURE)


def test_the_admin_lists_and_links_the_projects_tasks(owned, client, drain):
    from django.urls import reverse

    client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
    parent = tasks.spawns_subtask_returns_own.delay()
    drain()
    child = parent.subtasks.get()
    page = client.get(reverse("admin:customtask_ownedtask_change", args=[parent.pk])).content.decode()
    assert reverse("admin:customtask_ownedtask_change", args=[child.pk]) in page
    assert client.get(reverse("admin:customtask_ownedtask_changelist")).status_code == 200


def test_the_dashboard_and_the_api_filter_by_owner(owned, client):
    ann, bob = User.objects.create(username="ann"), User.objects.create(username="bob")
    mine = tasks.add.using(fields={"owner": ann}).delay(1, 2)
    tasks.add.using(fields={"owner": bob}).delay(3, 4)
    client.force_login(User.objects.create(username="staff", is_staff=True))
    for owner in ("ann", str(ann.pk)):
        assert [t["id"] for t in client.get("/cq/api/tasks/", {"owner": owner}).json()["tasks"]] == [str(mine.pk)]
        page = client.get("/cq/", {"owner": owner}).content.decode()
        assert page.count('<tr data-task="') == 1 and f'data-task="{mine.pk}"' in page
    assert 'name="owner"' in page
    assert client.get("/cq/api/tasks/", {"owner": "nobody"}).json()["tasks"] == []


def test_a_projects_task_model_needs_no_new_migration_of_cq():
    from django.core.management import call_command

    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # exits non-zero on a change


def _post(client, url, body):
    import json

    return client.post(url, json.dumps(body), content_type="application/json")


def _creator(owned, username):
    from django.contrib.auth.models import Permission

    user = User.objects.create(username=username)
    user.user_permissions.add(Permission.objects.get(codename=f"add_{owned._meta.model_name}"))
    return user


def test_the_api_sets_the_owner_to_the_requester_and_lets_only_staff_set_the_models_columns(owned, client):
    ann, bob = _creator(owned, "ann"), User.objects.create(username="bob")
    client.force_login(ann)
    created = _post(client, "/cq/api/tasks/", {"func_name": tasks.add.name, "args": [1, 2]})
    assert created.status_code == 201, created.content
    mine = owned.objects.get(pk=created.json()["task"]["id"])
    assert mine.owner == ann
    assert client.get(f"/cq/api/tasks/{mine.pk}/").status_code == 200  # the creator sees her own task
    for fields in ({"owner": bob.pk}, {"owner_id": bob.pk}, {"organisation": "another tenant"}):
        refused = _post(client, "/cq/api/tasks/", {"func_name": tasks.add.name, "args": [1, 2],
                                                   "options": {"fields": fields}})
        assert refused.status_code == 403 and "Only staff" in refused.json()["error"]["message"], fields
    assert owned.objects.count() == 1
    client.force_login(User.objects.create(username="staff", is_staff=True))
    given = _post(client, "/cq/api/tasks/", {"func_name": tasks.add.name, "args": [1, 2],
                                             "options": {"fields": {"owner": bob.pk, "organisation": "acme"}}})
    assert given.status_code == 201
    assert owned.objects.filter(pk=given.json()["task"]["id"], owner=bob, organisation="acme").exists()
    for bad in ({"owner": 10 ** 9}, {"owner": "not a user"}, {"organisation": "x" * 101}):
        response = _post(client, "/cq/api/tasks/", {"func_name": tasks.add.name, "options": {"fields": bad}})
        assert response.status_code == 400, (bad, response.content)
    assert owned.objects.count() == 2


def test_re_running_through_the_api_takes_the_permission_to_create(owned, client):
    cat = User.objects.create(username="cat")
    theirs = tasks.add.using(fields={"owner": cat}).delay(1, 2)
    client.force_login(cat)  # sees her own task, may not create tasks
    assert client.get(f"/cq/api/tasks/{theirs.pk}/").status_code == 200
    assert _post(client, f"/cq/api/tasks/{theirs.pk}/rerun/", {}).status_code == 403
    client.force_login(_creator(owned, "dan"))
    assert "may not see" in _post(client, f"/cq/api/tasks/{theirs.pk}/rerun/", {}).json()["error"]["message"]
    cat.user_permissions.add(*_creator(owned, "eve").user_permissions.all())
    client.force_login(cat)
    assert _post(client, f"/cq/api/tasks/{theirs.pk}/rerun/", {}).status_code == 201


def test_retention_rules_and_pruning_work_on_the_projects_model(owned, drain, settings):
    settings.CQ_RETENTION = [{"function": "echo", "status": "SUCCESS", "keep": 0}]
    from cq.scheduling import pruning

    ann = User.objects.create(username="ann")
    brief = tasks.spawns_subtask_returns_own.using(fields={"owner": ann}).delay()
    kept = tasks.add.using(fields={"owner": ann}).delay(1, 2)
    drain()
    owned.objects.filter(pk=brief.pk).update(result_expiry=owned.objects.get(pk=brief.pk).finished)
    echo = tasks.echo.delay()
    drain()
    assert owned.objects.get(pk=echo.pk).result_expiry == owned.objects.get(pk=echo.pk).finished
    assert pruning.prune().rows == 3  # brief's tree (itself and its echo subtask), and the echo
    assert list(owned.objects.all()) == [kept]
    assert ann.cq_tasks.count() == 1
