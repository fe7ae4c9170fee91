"""URLs: the page, Django's login, the view that ships an order, a health check."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("orders/<int:order_id>/ship/", views.ship, name="ship"),
    path("healthz", views.healthz, name="healthz"),
]
