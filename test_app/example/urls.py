"""URLs of the example project: the task page, its JSON feed, the offload buttons, the admin,
and leek's metrics.
"""

from django.contrib import admin
from django.urls import include, path

from example import views

urlpatterns = [
    path("", views.index, name="index"),
    path("tasks.json", views.tasks_json, name="tasks_json"),
    path("offload/<str:name>/", views.offload, name="offload"),
    path("admin/", admin.site.urls),
    path("leek/", include("leek.urls")),
]
