"""The project's notifykit objects, in one module as a Django project keeps them.

* ``hub`` — serves the websockets of this process (``shop.asgi``).
* ``notify_user_sync`` — send from synchronous code: views, signals, Celery tasks, management
  commands. With Redis it is one ``PUBLISH`` (``RedisSyncPublisher``: no event loop, no hub, so
  it works in a Celery worker too); without Redis it hands the notification to this process's
  running hub through asgiref's ``async_to_sync`` (only inside the ASGI server).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings

from notifykit import Hub
from notifykit.redis import RedisPropagator, RedisSyncPublisher

PREFIX = "shop"

if settings.NOTIFYKIT_REDIS_URL:
    hub = Hub(RedisPropagator(settings.NOTIFYKIT_REDIS_URL, prefix=PREFIX))
    publisher: RedisSyncPublisher | None = RedisSyncPublisher(
        settings.NOTIFYKIT_REDIS_URL, prefix=PREFIX
    )
else:
    hub = Hub()
    publisher = None


def notify_user_sync(user_id: str, event: str, data: Any = None) -> str:
    """Send ``event`` to every connection of ``user_id``, from synchronous code; returns the
    notification id."""
    if publisher is not None:
        return publisher.notify_user(user_id, event, data)
    notification_id: str = async_to_sync(hub.notify_user)(user_id, event, data)
    return notification_id
