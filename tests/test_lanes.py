"""The lanes stay honest (tests/conftest.py): a test that would start Redis or a server process
without its mark stops the run or fails, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An empty test suite with notifykit's conftest, on the default backends."""
    monkeypatch.delenv("NOTIFYKIT_TEST_BACKENDS", raising=False)
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


def test_a_test_starting_redis_or_a_server_process_without_its_mark_fails_before_it_starts(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(
        """
        import pytest
        from servers import RedisServer
        from servers_e2e import start_serve

        def test_starts_redis_by_hand(tmp_path):
            server = RedisServer(tmp_path / "redis")
            server.start()
            server.stop()

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
    result.assert_outcomes(failed=1, errors=1)
    output = result.stdout.str()
    redis = "::test_starts_redis_by_hand starts a redis-server but is not marked @pytest.mark.redis"
    e2e = "::test_uses_a_server starts a server process but is not marked @pytest.mark.e2e"
    assert redis in output
    assert e2e in output


ASYNC_TESTS = """
import pytest

pytestmark = pytest.mark.anyio

async def test_core():
    pass

@pytest.mark.redis
async def test_redis():
    pass

@pytest.mark.e2e
async def test_e2e():
    pass

@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_chooses_asyncio():
    pass
"""


def test_async_tests_run_on_asyncio_and_trio_but_redis_e2e_and_chosen_ones_on_asyncio_alone(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(ASYNC_TESTS)
    result = suite.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "*::test_core[[]asyncio[]]",
            "*::test_core[[]trio[]]",
            "*::test_redis[[]asyncio[]]",
            "*::test_e2e[[]asyncio[]]",
            "*::test_chooses_asyncio[[]asyncio[]]",
            "*5/7 tests collected (2 deselected)*",
        ]
    )


def test_notifykit_test_backends_chooses_the_backends(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite.makepyfile(ASYNC_TESTS)
    monkeypatch.setenv("NOTIFYKIT_TEST_BACKENDS", "trio")
    result = suite.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "*::test_core[[]trio[]]",
            "*::test_chooses_asyncio[[]asyncio[]]",
            "*2/4 tests collected (2 deselected)*",
        ]
    )
    monkeypatch.setenv("NOTIFYKIT_TEST_BACKENDS", "asyncio,curio")
    result = suite.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*NOTIFYKIT_TEST_BACKENDS must name one or more of asyncio, trio*"]
    )
