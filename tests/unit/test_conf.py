"""cq's settings: read once, read again whenever Django says a setting changed."""

from __future__ import annotations

from django.test import override_settings

from cq.conf import settings


def test_a_setting_is_read_again_after_it_changes():
    assert settings.LOG_LIMIT == 40  # cq's default, now kept
    with override_settings(CQ_LOG_LIMIT=3):
        assert settings.LOG_LIMIT == 3
    assert settings.LOG_LIMIT == 40


def test_the_pytest_django_fixture_changes_it_too(settings):
    from cq.conf import settings as cq_settings

    assert cq_settings.PREPARED_STATEMENTS is True
    settings.CQ_PREPARED_STATEMENTS = False
    assert cq_settings.PREPARED_STATEMENTS is False
