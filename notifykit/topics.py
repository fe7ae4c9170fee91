"""Who may subscribe to which topic: the default policy reads the token's ``topics`` claim.

A policy is any ``(principal, topic) -> bool | Awaitable[bool]``
(:data:`~notifykit.protocols.TopicPolicy`). :func:`claim_topics_policy` is the default: a token
may subscribe to the topics its ``topics`` claim lists, with ``*`` wildcards
(:func:`topic_matches`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .model import Principal

__all__ = ["claim_topics_policy", "topic_matches"]


def topic_matches(pattern: str, topic: str) -> bool:
    """True if ``topic`` matches ``pattern``.

    A pattern is a topic name in which ``*`` stands for any run of characters, the empty run
    included: ``team:*`` matches ``team:7`` and ``team:7:chat``, ``doc:*:edits`` matches
    ``doc:42:edits``, ``*`` matches every topic. No other character is special (``?`` and
    ``[`` match themselves). Runs in time linear in the lengths, whatever the pattern.
    """
    if not isinstance(pattern, str) or not isinstance(topic, str):
        return False
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == topic
    first, *middle, last = parts
    if len(first) + len(last) > len(topic):
        return False
    if not topic.startswith(first) or not topic.endswith(last):
        return False
    position, end = len(first), len(topic) - len(last)
    # Taking the leftmost occurrence of each fixed piece is never worse than a later one.
    for piece in middle:
        found = topic.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def claim_topics_policy(claim: str = "topics") -> Callable[[Principal, str], bool]:
    """The default :data:`~notifykit.protocols.TopicPolicy`: a principal may subscribe to a
    topic that matches (:func:`topic_matches`) one of the patterns in its ``claim`` claim.

    The claim is a list of patterns (entries that are not strings are ignored) or a single
    pattern string; anything else, or no claim, allows no topic. Anonymous principals are
    allowed no topic.
    """
    if not isinstance(claim, str) or not claim:
        raise ConfigurationError("claim must be a non-empty claim name")

    def policy(principal: Principal, topic: str) -> bool:
        if principal.is_anonymous:
            return False
        patterns = principal.claims.get(claim)
        if isinstance(patterns, str):
            patterns = [patterns]
        if not isinstance(patterns, list | tuple):
            return False
        return any(isinstance(p, str) and topic_matches(p, topic) for p in patterns)

    policy.__qualname__ = policy.__name__ = f"claim_topics_policy({claim!r})"
    return policy
