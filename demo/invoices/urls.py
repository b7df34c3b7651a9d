from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("runs/", views.generate, name="generate"),
    path("runs/<int:run_id>/", views.run_page, name="run"),
    path("runs/<int:run_id>/state/", views.run_state, name="run-state"),
    path("runs/<int:run_id>/archive/", views.archive, name="archive"),
]
