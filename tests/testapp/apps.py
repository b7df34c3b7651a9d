from django.apps import AppConfig
from django.conf import settings


class TestAppConfig(AppConfig):
    name = "tests.testapp"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # A worker process started by tests/integration/test_tracing.py writes its spans to a file,
        # as a project sets up its tracer provider in its own AppConfig.ready().
        path = getattr(settings, "TEST_TRACE_FILE", None)
        if path:
            # app loading: OpenTelemetry's SDK, only in the processes that trace
            from tests.otel import export_to_file

            export_to_file(path)
