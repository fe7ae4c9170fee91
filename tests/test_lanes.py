"""The lanes stay honest (tests/conftest.py): a test that would start Redis or a server process
without its mark stops the run or fails, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """An empty test suite with notifykit's conftest."""
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nmarkers =\n    redis: starts Redis\n    e2e: starts servers\n")
    return pytester


def test_a_test_using_a_redis_fixture_without_the_mark_stops_the_run(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(
        """
        import pytest

        def test_forgot_the_mark(redis_server):
            pass

        @pytest.mark.redis
        def test_marked(redis_cluster):
            pass
        """
    )
    result = suite.runpytest("-m", "not redis")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*not marked @pytest.mark.redis*", "*::test_forgot_the_mark"])
    assert "test_marked" not in result.stderr.str()


def test_a_test_starting_a_redis_server_without_the_mark_fails_before_it_starts(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(
        """
        from servers import RedisServer

        def test_starts_redis_by_hand(tmp_path):
            server = RedisServer(tmp_path / "redis")
            server.start()
            server.stop()
        """
    )
    result = suite.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*starts a redis-server but is not marked @pytest.mark.redis*"])


def test_a_test_starting_a_server_process_without_the_mark_fails_before_it_starts(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(
        """
        import pytest
        from servers_e2e import start_serve

        @pytest.fixture(scope="module")
        def server():
            server = start_serve("--dev")
            yield server
            server.stop()

        def test_uses_a_server(server):
            pass
        """
    )
    result = suite.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*starts a server process but is not marked @pytest.mark.e2e*"])
