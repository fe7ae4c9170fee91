"""Tools for testing notifykit and code built on it.

:mod:`notifykit.testing.conformance` holds the conformance suite: the contracts of
:mod:`notifykit.protocols` as executable checks that every implementation must pass.
"""
