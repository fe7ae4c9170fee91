"""Publish one notification to the example's servers through Redis, from any process.

    REDIS_URL=redis://127.0.0.1:6379/0 python publish.py USER EVENT '{"json": "data"}'
    REDIS_URL=... python publish.py --broadcast EVENT

Synchronous: no event loop and no hub (``RedisSyncPublisher``), as a cron job or a worker would
do it. Prints the notification id.
"""

from __future__ import annotations

import argparse
import json
import os

from notifykit.redis import RedisSyncPublisher

PREFIX = "example"  # the servers' channel prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("user", nargs="?", help="the user to notify")
    parser.add_argument("event")
    parser.add_argument("data", nargs="?", default="null", help="JSON data")
    parser.add_argument("--broadcast", action="store_true", help="to every connection")
    args = parser.parse_args()
    if not args.broadcast and not args.user:
        parser.error("give a USER, or --broadcast")
    with RedisSyncPublisher(os.environ["REDIS_URL"], prefix=PREFIX) as publisher:
        data = json.loads(args.data)
        if args.broadcast:
            print(publisher.broadcast(args.event, data))
        else:
            print(publisher.notify_user(args.user, args.event, data))


if __name__ == "__main__":
    main()
