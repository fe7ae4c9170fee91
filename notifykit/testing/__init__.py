"""Tools for testing notifykit and code built on it.

:func:`inbox` (from :mod:`notifykit.testing.inbox`) collects what a user would receive, for
unit tests of code that sends notifications. :mod:`notifykit.testing.conformance` holds the
conformance suite: the contracts of :mod:`notifykit.protocols` as executable checks that every
implementation must pass.
"""

from .inbox import SENTINEL_EVENT, Inbox, inbox

__all__ = ["SENTINEL_EVENT", "Inbox", "inbox"]
