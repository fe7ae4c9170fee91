"""Django settings of the Channels contract-test project: the least Channels needs."""

from __future__ import annotations

SECRET_KEY = "contract-tests-only-" + "0" * 40
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "contract_django.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
ASGI_APPLICATION = "contract_django.asgi.application"
