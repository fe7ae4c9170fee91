"""Settings of the shop example: a Django project that pushes notifications with notifykit.

Everything that differs between a laptop and production comes from the environment:
``DJANGO_SECRET_KEY``, ``SQLITE_PATH``, ``REDIS_URL`` (unset: one process, in-memory hub),
``NOTIFYKIT_JWT_SECRET`` (optional: token clients besides session logins) and
``ALLOWED_ORIGINS`` (comma-separated origins whose pages may open the websocket).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-" + "x" * 50)
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "shop",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "shop.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
    }
}
USE_TZ = True
ASGI_APPLICATION = "shop.asgi.application"
LOGIN_REDIRECT_URL = "/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# notifykit
NOTIFYKIT_REDIS_URL = os.environ.get("REDIS_URL") or None
NOTIFYKIT_JWT_SECRET = os.environ.get("NOTIFYKIT_JWT_SECRET") or None
NOTIFYKIT_ALLOWED_ORIGINS = os.environ.get(
    "ALLOWED_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000"
).split(",")
