"""URLs a site includes to serve leek's views: `path("leek/", include("leek.urls"))`."""

from django.urls import path

from leek import views

app_name = "leek"
urlpatterns = [path("metrics", views.metrics, name="metrics")]
