"""URLs of the test project: the admin, and leek's own views."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [path("admin/", admin.site.urls), path("leek/", include("leek.urls"))]
