"""The ``notifykit`` command line: ``token``, ``publish`` and ``serve``.

Settings errors are checked in-process through ``main(argv)`` (they fail before any server
starts); what must hold for the real command — only a token on stdout, no traceback, the
environment, ``--dev`` — runs ``python -m notifykit`` in a subprocess.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from servers import RedisServer, eventually
from servers_e2e import (
    API_KEY,
    FRAME_TIMEOUT,
    SECRET,
    Server,
    clean_env,
    client,
    closed,
    free_port,
    health,
    log_on_failure,
    publish,
    recv,
    send,
    start_serve,
    token,
    wait_for_health,
    welcome,
)

import notifykit
from notifykit.cli import SETTINGS, build_parser, main
from notifykit.cli.backends import Backends, build_backends
from notifykit.cli.serve import dev_settings, own_command
from notifykit.cli.settings import Settings, read_settings
from notifykit.jwt import JWTAuthenticator
from notifykit.memory import MemoryPropagator
from notifykit.redis import RedisClusterPropagator, RedisPresence, RedisPropagator

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
JWT_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m notifykit <args>`` in a subprocess, with no NOTIFYKIT_* variable unless
    given in ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "notifykit", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(**(env or {})),
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    """stderr is exactly one ``notifykit: error:`` line containing every fragment."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("notifykit: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(autouse=True)
def _no_notifykit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs see only the NOTIFYKIT_* variables a test sets itself."""
    for name in SETTINGS:
        monkeypatch.delenv("NOTIFYKIT_" + name.upper(), raising=False)


def verify(tok: str, **options: str) -> dict[str, object]:
    principal = anyio.run(JWTAuthenticator(secret=SECRET, **options).authenticate, tok)
    return {"user": principal.user_id, **principal.claims}


# --- token --------------------------------------------------------------------------------


@pytest.mark.e2e
def test_token_prints_only_a_token_that_verifies() -> None:
    result = run_cli("token", "--user", "42", "--ttl", "60", "--jwt-secret", SECRET)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert JWT_RE.fullmatch(result.stdout.rstrip("\n"))  # nothing else, so $(...) works
    claims = verify(result.stdout.strip())
    assert claims["user"] == "42"
    assert 55 <= int(claims["exp"]) - int(claims["iat"]) <= 61  # type: ignore[call-overload]


def test_token_carries_topics_extra_claims_audience_and_issuer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["token", "--user", "7", "--jwt-secret", SECRET, "--topics", "team:7:*, doc:1"]
    argv += ["--claim", "role=admin", "--claim", "level=3", "--claim", 'tags=["a"]']
    argv += ["--jwt-audience", "svc", "--jwt-issuer", "https://auth.example"]
    assert main(argv) == 0
    claims = verify(capsys.readouterr().out.strip(), audience="svc", issuer="https://auth.example")
    assert claims["topics"] == ["team:7:*", "doc:1"]
    assert (claims["role"], claims["level"], claims["tags"]) == ("admin", 3, ["a"])


def test_token_puts_the_user_under_the_configured_user_claim(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["token", "--user", "u-9", "--jwt-secret", SECRET, "--user-claim", "uid"]) == 0
    assert verify(capsys.readouterr().out.strip(), user_claim="uid")["user"] == "u-9"


def test_token_reads_the_secret_from_the_environment_and_a_flag_overrides_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFYKIT_JWT_SECRET", SECRET)
    assert main(["token", "--user", "1"]) == 0
    assert verify(capsys.readouterr().out.strip())["user"] == "1"

    other = "another-secret-" + "x" * 32
    assert main(["token", "--user", "1", "--jwt-secret", other]) == 0
    tok = capsys.readouterr().out.strip()
    anyio.run(JWTAuthenticator(secret=other).authenticate, tok)


@pytest.mark.e2e
def test_token_without_a_secret_exits_2_with_one_line_and_no_traceback() -> None:
    result = run_cli("token", "--user", "42")
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_line_error(result.stderr, "no JWT secret", "NOTIFYKIT_JWT_SECRET")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        pytest.param(["--jwt-secret", "short"], "at least 32 bytes", id="short-secret"),
        pytest.param(["--claim", "novalue"], "NAME=VALUE", id="bad-claim"),
        pytest.param(["--claim", "exp=1"], "set 'exp' with --ttl", id="reserved-claim"),
        pytest.param(["--claim", "sub=43"], "set 'sub' with --user", id="claim-sub"),
        pytest.param(["--claim", "aud=x"], "with --jwt-audience", id="claim-aud"),
        pytest.param(["--ttl", "-5"], "ttl", id="negative-ttl"),
        pytest.param(["--jwt-algorithm", "RS256"], "HMAC", id="not-hmac"),
    ],
)
def test_token_with_bad_settings_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    full = ["token", "--user", "42", "--jwt-secret", SECRET, *argv]
    assert main(full) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_error(err, says)


# --- serve: settings refused before anything starts -----------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        pytest.param([], {}, "no JWT key", id="no-key"),
        pytest.param(["--jwt-secret", SECRET], {}, "no API key", id="no-api-key"),
        pytest.param(["--jwt-secret", "too-short"], {}, "at least 32 bytes", id="short-secret"),
        pytest.param(
            ["--jwt-secret", SECRET, "--jwt-algorithm", "none"], {}, "'none'", id="alg-none"
        ),
        pytest.param(
            ["--jwt-secret", SECRET, "--jwt-algorithm", "RS256"], {}, "public", id="rs256-secret"
        ),
        pytest.param(["--jwt-public-key-file", "/nonexistent.pem"], {}, "cannot read", id="file"),
        pytest.param([], {"NOTIFYKIT_ALLOW_ANONYMOUS": "maybe"}, "ALLOW_ANONYMOUS", id="bool"),
        pytest.param([], {"NOTIFYKIT_PORT": "eighty"}, "NOTIFYKIT_PORT", id="int"),
        pytest.param([], {"NOTIFYKIT_LOG_LEVEL": "loud"}, "log level", id="log-level"),
        pytest.param([], {"NOTIFYKIT_LOG_FORMAT": "xml"}, "log format", id="log-format"),
        pytest.param(["--queue-size", "0"], {}, "--queue-size", id="queue-size"),
        pytest.param(["--close-timeout", "0"], {}, "--close-timeout", id="close-timeout"),
        pytest.param(
            [], {"NOTIFYKIT_SHUTDOWN_TIMEOUT": "inf"}, "NOTIFYKIT_SHUTDOWN_TIMEOUT", id="inf"
        ),
        pytest.param(["--max-connections", "0"], {}, "--max-connections", id="max-conns"),
        pytest.param(
            [],
            {"NOTIFYKIT_MAX_USER_CONNECTIONS": "0"},
            "NOTIFYKIT_MAX_USER_CONNECTIONS",
            id="max-user-conns",
        ),
        pytest.param(["--max-frame-rate", "0"], {}, "--max-frame-rate", id="zero-rate"),
        pytest.param(["--max-frame-rate", "nan"], {}, "--max-frame-rate", id="nan-rate"),
        pytest.param(["--frame-burst", "0"], {}, "--frame-burst", id="zero-burst"),
        pytest.param(["--frame-burst", "1.5"], {}, "--frame-burst", id="fractional-burst"),
        pytest.param(["--max-data-bytes", "3"], {}, "--max-data-bytes", id="max-data-bytes"),
    ],
)
def test_serve_with_bad_or_missing_settings_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    says: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_error(err, says)


def test_serve_without_an_api_key_says_nothing_could_publish(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--jwt-secret", SECRET]) == 2
    assert_one_line_error(capsys.readouterr().err, "nothing can publish", "--dev")


def test_serve_with_both_a_secret_and_a_public_key_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text("-----BEGIN PUBLIC KEY-----\n")
    assert main(["serve", "--jwt-secret", SECRET, "--jwt-public-key-file", str(key_file)]) == 2
    assert_one_line_error(capsys.readouterr().err, "not both")


def test_serve_without_uvicorn_says_which_extra_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # makes `import uvicorn` fail
    assert main(["serve", "--jwt-secret", SECRET, "--api-key", API_KEY]) == 2
    assert_one_line_error(capsys.readouterr().err, "pip install 'notifykit[server]'")


# --- serve: Redis settings -------------------------------------------------------------------

KEYS = ["--jwt-secret", SECRET, "--api-key", API_KEY]


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        pytest.param(
            ["--redis-url", "redis://a", "--redis-cluster-url", "redis://b"],
            {},
            "give --redis-url or --redis-cluster-url, not both",
            id="both-urls",
        ),
        pytest.param(
            [],
            {"NOTIFYKIT_REDIS_URL": "redis://a", "NOTIFYKIT_REDIS_CLUSTER_URL": "redis://b"},
            "not both",
            id="both-urls-env",
        ),
        pytest.param(["--redis-url", "http://x"], {}, "--redis-url: invalid Redis URL", id="url"),
        pytest.param(["--redis-url", "redis://x:port"], {}, "invalid Redis URL", id="port"),
        pytest.param(
            ["--redis-cluster-url", "mysql://x"], {}, "--redis-cluster-url", id="cluster-url"
        ),
        pytest.param(["--redis-prefix", "app"], {}, "--redis-prefix needs --redis-url", id="pfx"),
        pytest.param([], {"NOTIFYKIT_PRESENCE_TTL": "5"}, "--presence-ttl needs", id="ttl-alone"),
        pytest.param(
            ["--redis-url", "redis://x", "--presence-ttl", "0"], {}, "--presence-ttl", id="ttl-0"
        ),
        pytest.param([], {"NOTIFYKIT_PRESENCE_TTL": "soon"}, "NOTIFYKIT_PRESENCE_TTL", id="ttl"),
        pytest.param(
            ["--redis-url", "redis://x", "--redis-prefix", "two words"],
            {},
            "--redis-prefix 'two words'",
            id="space",
        ),
        pytest.param(
            ["--redis-cluster-url", "redis://x", "--redis-prefix", "{app}"], {}, "{", id="tag"
        ),
        pytest.param(["--instance-id", "a/b"], {}, "--instance-id", id="slash"),
        pytest.param([], {"NOTIFYKIT_INSTANCE_ID": "pod 7"}, "--instance-id", id="id-space"),
    ],
)
def test_serve_with_unusable_redis_settings_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    says: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", *KEYS, *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_error(err, says)


def serve_backends(argv: list[str], env: dict[str, str]) -> Backends:
    """What ``notifykit serve <argv>`` would propagate with, in this environment."""
    args = build_parser().parse_args(["serve", *argv])
    return build_backends(read_settings(args, env))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the Redis parts are asyncio-only
@pytest.mark.parametrize(
    ("variable", "propagator_class"),
    [
        ("NOTIFYKIT_REDIS_URL", RedisPropagator),
        ("NOTIFYKIT_REDIS_CLUSTER_URL", RedisClusterPropagator),
    ],
)
async def test_serve_takes_redis_settings_from_the_environment(
    variable: str, propagator_class: type[Any]
) -> None:
    env = {
        variable: "redis://:pw@127.0.0.1:1/0",
        "NOTIFYKIT_REDIS_PREFIX": "shop",
        "NOTIFYKIT_INSTANCE_ID": "pod-7",
        "NOTIFYKIT_PRESENCE_TTL": "12.5",
    }
    backends = serve_backends([], env)
    assert isinstance(backends.propagator, propagator_class)
    assert isinstance(backends.presence, RedisPresence)
    assert (backends.instance_id, backends.presence.instance_id) == ("pod-7", "pod-7")
    assert backends.presence.ttl == 12.5
    assert "'shop'" in backends.description
    assert "127.0.0.1:1" in backends.description
    assert "pw" not in backends.description
    await backends.presence.aclose()  # never started: only closes its client


def test_serve_without_redis_propagates_in_memory_under_a_generated_instance_id() -> None:
    first = serve_backends([], {})
    second = serve_backends([], {})
    assert isinstance(first.propagator, MemoryPropagator)
    assert first.presence is None
    assert re.fullmatch(rf"[A-Za-z0-9._-]+-{os.getpid()}-[0-9a-f]{{6}}", first.instance_id)
    assert first.instance_id != second.instance_id
    assert serve_backends(["--instance-id", "pod-7"], {}).instance_id == "pod-7"


@pytest.mark.e2e
def test_serve_with_both_redis_urls_exits_2_in_a_real_process() -> None:
    result = run_cli(
        "serve", *KEYS, "--redis-url", "redis://a", env={"NOTIFYKIT_REDIS_CLUSTER_URL": "redis://b"}
    )
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "not both")


@pytest.mark.e2e
@pytest.mark.anyio
async def test_serve_logs_its_instance_id_and_redis_address_but_never_the_password(
    request: pytest.FixtureRequest,
) -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    srv = start_serve(*KEYS, "--redis-url", url, "--log-level", "info")
    try:
        with log_on_failure(request, srv):
            assert (await health(srv))["status"] == "degraded"
            # The first reconnection warning, which names the Redis address, is in the log:
            await eventually(lambda: "cannot connect to Redis at" in srv.stderr(), FRAME_TIMEOUT)
            stderr = srv.stderr()
            match = re.search(r"instance (\S+): Redis at (\S+) ", stderr)
            assert match is not None, stderr
            assert re.fullmatch(rf"[A-Za-z0-9._-]+-{srv.process.pid}-[0-9a-f]{{6}}", match[1])
            assert match[2] == url.rpartition("@")[2].removesuffix("/0")
            assert "hunter2" not in stderr + srv.stdout()
    finally:
        srv.stop()


@pytest.mark.anyio
@pytest.mark.redis
@pytest.mark.e2e
async def test_serve_reaches_redis_over_tls_with_a_password_and_a_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis", password="s3cret-pw", tls=True)
    redis.start()
    url = redis.url.replace("/0?", "/3?")  # rediss://:s3cret-pw@127.0.0.1:<port>/3?ssl_ca_certs=
    assert url.startswith("rediss://:s3cret-pw@")
    srv = start_serve(*KEYS, "--redis-url", url, "--instance-id", "tls-1")
    try:
        with log_on_failure(request, srv):
            await wait_for_health(srv, lambda h: h["status"] == "ok")
            async with client(srv, token("tess")) as ws:
                await welcome(ws)
                sent = await publish(srv, {"event": "over.tls", "user": "tess"})  # via Redis
                assert (await recv(ws))["id"] == sent
                keyspace = redis.command("INFO", "keyspace")  # {"db3": {"keys": ...}}
                assert set(keyspace) == {"db3"}  # presence wrote to the URL's database only
    finally:
        srv.stop()
        redis.stop()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("argv", "says"),
    [
        pytest.param(["--port", "99999"], "--port 99999", id="port-too-high"),
        pytest.param(["--port", "-5"], "--port '-5'", id="negative-port"),
        pytest.param(["--port", "0"], "--port '0'", id="port-0"),
        pytest.param(["--host", "999.1.1.1"], "--host '999.1.1.1'", id="bad-ipv4"),
        pytest.param(["--host", "::g"], "--host '::g'", id="bad-ipv6"),
        pytest.param(["--host", "no-such-host.invalid"], "--host", id="unknown-name"),
    ],
)
def test_serve_refuses_an_address_it_cannot_listen_on_before_anything_starts(
    argv: list[str], says: str
) -> None:
    result = run_cli("serve", "--dev", *argv)  # --dev would print its banner if it started
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_line_error(result.stderr, says)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "0.0.0.0", "localhost"])
def test_serve_accepts_addresses_and_names_it_can_listen_on(host: str) -> None:
    args = build_parser().parse_args(["serve", "--host", host, "--port", "65535"])
    assert read_settings(args, {}).host == host


@pytest.mark.e2e
def test_version_prints_the_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"notifykit {notifykit.__version__}"


def test_token_lives_exactly_its_ttl(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--user", "42", "--ttl", "3600", "--jwt-secret", SECRET]) == 0
    claims = verify(capsys.readouterr().out.strip())
    assert claims["exp"] == claims["iat"] + 3600  # type: ignore[operator]


@pytest.mark.e2e
def test_jwt_leeway_help_names_the_three_time_claims() -> None:
    assert "exp, nbf and iat" in " ".join(run_cli("serve", "--help").stdout.split())


@pytest.mark.parametrize(
    ("settings", "warns"),
    [
        pytest.param(Settings(dev=True, redis_url="redis://r"), True, id="redis"),
        pytest.param(Settings(dev=True, redis_cluster_url="redis://r"), True, id="cluster"),
        pytest.param(Settings(dev=True), False, id="memory"),
        pytest.param(
            Settings(dev=True, redis_url="redis://r", jwt_secret=SECRET, api_key=("k",)),
            False,
            id="shared-secrets",
        ),
    ],
)
def test_dev_mode_warns_when_instances_on_one_redis_could_not_share_its_secrets(
    capsys: pytest.CaptureFixture[str], settings: Settings, warns: bool
) -> None:
    generated = dev_settings(settings)
    assert generated.jwt_secret
    assert generated.api_key
    err = capsys.readouterr().err
    assert ("NOTIFYKIT_JWT_SECRET" in err) is warns
    if warns:
        assert err.startswith("notifykit: warning: ")
    assert settings.jwt_secret is None or generated.jwt_secret == settings.jwt_secret


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        pytest.param(".venv/bin/notifykit", [".venv/bin/notifykit"], id="venv-script"),
        pytest.param("__main__.py", [sys.executable, "-m", "notifykit"], id="python-m"),
    ],
)
def test_dev_mode_prints_a_publish_command_that_runs_from_another_terminal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv0: str, expected: list[str]
) -> None:
    monkeypatch.setattr(sys, "argv", [argv0])
    monkeypatch.setenv("PATH", str(tmp_path))  # no notifykit on PATH
    assert own_command() == expected


def test_dev_mode_prints_plain_notifykit_when_that_is_the_one_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "notifykit"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setenv("PATH", str(tmp_path))
    assert own_command() == ["notifykit"]


@pytest.mark.e2e
def test_serve_without_a_key_exits_2_in_a_real_process() -> None:
    result = run_cli("serve")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "no JWT key")


@pytest.mark.e2e
def test_serve_on_a_port_in_use_exits_3_without_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run_cli("serve", "--jwt-secret", SECRET, "--api-key", "k", "--port", port)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert "address already in use" in result.stderr.lower()


@pytest.mark.e2e
def test_bad_flags_exit_2_without_a_traceback() -> None:
    for argv in (["serve", "--no-such-flag"], ["publish", "--event", "e"], []):
        result = run_cli(*argv)
        assert result.returncode == 2, argv
        assert "Traceback" not in result.stderr
        assert "error:" in result.stderr


@pytest.mark.e2e
def test_every_setting_is_documented_with_its_environment_variable() -> None:
    docs = DOCS.read_text()
    help_text = run_cli("serve", "--help").stdout
    for dest in SETTINGS:
        assert f"NOTIFYKIT_{dest.upper()}" in docs, dest
        assert f"--{dest.replace('_', '-')}" in docs, dest
        if dest != "url":
            assert f"NOTIFYKIT_{dest.upper()}" in help_text, dest


# --- publish against a real server ----------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_serve("--jwt-secret", SECRET, "--api-key", API_KEY, "--allow-anonymous")
    yield srv
    srv.stop()


async def publish_cli(server: Server, *args: str) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(30):
        return await anyio.run_process(
            [sys.executable, "-m", "notifykit", "publish", "--url", server.url, *args],
            env=clean_env(NOTIFYKIT_API_KEY=API_KEY),
            check=False,
        )


@pytest.mark.e2e
@pytest.mark.anyio
async def test_publish_prints_the_id_of_the_notification_the_user_receives(
    request: pytest.FixtureRequest, server: Server
) -> None:
    with log_on_failure(request, server):
        async with client(server, token("42")) as ws:
            await welcome(ws)
            result = await publish_cli(
                server, "--user", "42", "--event", "order.shipped", "--data", '{"id": 7}'
            )
            assert result.returncode == 0, result.stderr
            printed = result.stdout.decode().strip()
            frame = await recv(ws)
            assert frame["id"] == printed
            assert (frame["event"], frame["data"]) == ("order.shipped", {"id": 7})


@pytest.mark.e2e
@pytest.mark.anyio
async def test_publish_reaches_each_kind_of_target(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFYKIT_URL", server.url)
    monkeypatch.setenv("NOTIFYKIT_API_KEY", API_KEY)

    async def cli(*args: str) -> str:
        code = await anyio.to_thread.run_sync(main, ["publish", "--event", "e", *args])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out.strip()

    async with (
        client(server, token("a", topics=["t"])) as a,
        client(server, token("b")) as b,
        client(server) as anonymous,
    ):
        a_id = (await welcome(a))["connection_id"]
        await welcome(b)
        await welcome(anonymous)
        await send(a, {"type": "subscribe", "topic": "t"})
        assert (await recv(a))["type"] == "subscribed"

        expected = [
            (await cli("--users", "a,b"), [a, b]),
            (await cli("--topic", "t"), [a]),
            (await cli("--authenticated"), [a, b]),
            (await cli("--broadcast", "--exclude", a_id), [b, anonymous]),
            (await cli("--broadcast", "--data", "[1, 2]"), [a, b, anonymous]),
        ]
        received: dict[int, list[str]] = {id(ws): [] for ws in (a, b, anonymous)}
        for notification_id, sockets in expected:
            for ws in sockets:
                received[id(ws)].append(notification_id)
        for ws in (a, b, anonymous):
            got = [(await recv(ws))["id"] for _ in received[id(ws)]]
            assert got == received[id(ws)]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("argv", "says"),
    [
        pytest.param(["--api-key", "wrong"], "401: missing or invalid API key", id="wrong-key"),
        pytest.param(["--topic", "no spaces"], "400: a topic name must be", id="bad-topic"),
    ],
)
def test_publish_refused_by_the_server_exits_1_with_its_message(
    server: Server, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    full = ["publish", "--url", server.url, "--event", "e"]
    defaults = [] if "--api-key" in argv else ["--api-key", API_KEY]
    target = [] if "--topic" in argv else ["--broadcast"]
    assert main([*full, *defaults, *target, *argv]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_error(err, says)


@pytest.mark.e2e
def test_publish_to_nothing_listening_exits_1_with_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("publish", "--url", url, "--api-key", "k", "--broadcast", "--event", "e")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "cannot reach", url)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        pytest.param(["--data", "{not json"], "--data is not valid JSON", id="bad-data"),
        pytest.param(["--users", " , "], "--users", id="no-users"),
        pytest.param(["--url", "ftp://x"], "--url", id="bad-url"),
    ],
)
def test_publish_with_bad_arguments_exits_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    target = [] if "--users" in argv else ["--broadcast"]
    assert main(["publish", "--event", "e", "--api-key", "k", *target, *argv]) == 2
    assert_one_line_error(capsys.readouterr().err, says)


def test_publish_without_an_api_key_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "--broadcast", "--event", "e"]) == 2
    assert_one_line_error(capsys.readouterr().err, "no API key", "NOTIFYKIT_API_KEY")


# --- serve configured by the environment ----------------------------------------------------


@pytest.fixture(scope="module")
def env_server() -> Iterator[Server]:
    env = clean_env(
        NOTIFYKIT_JWT_SECRET=SECRET,
        NOTIFYKIT_API_KEY="old-key,new-key",
        NOTIFYKIT_TOPICS_CLAIM="perms",
        NOTIFYKIT_ALLOW_ANONYMOUS="yes",
        NOTIFYKIT_MAX_PUBLISH_BYTES="2048",
        NOTIFYKIT_ALLOW_ORIGIN="https://env.example",
        NOTIFYKIT_HOST="127.0.0.1",
    )
    srv = start_serve("--allow-origin", "https://flag.example", env=env)
    yield srv
    srv.stop()


@pytest.mark.e2e
@pytest.mark.anyio
async def test_serve_reads_every_setting_from_the_environment(
    request: pytest.FixtureRequest, env_server: Server
) -> None:
    with log_on_failure(request, env_server):
        async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
            for key in ("old-key", "new-key"):  # rotation: both keys work
                response = await http.post(
                    f"{env_server.url}/publish",
                    json={"event": "e", "broadcast": True},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert response.status_code == 202, response.text
            response = await http.post(
                f"{env_server.url}/publish",
                json={"event": "e", "broadcast": True, "data": "x" * 2048},
                headers={"Authorization": "Bearer new-key"},
            )
            assert response.status_code == 413
        async with client(env_server) as anonymous:
            assert (await welcome(anonymous))["user"] is None
        async with client(env_server, token("p", perms=["room:*"], topics=["other"])) as ws:
            await welcome(ws)
            await send(ws, {"type": "subscribe", "topic": "room:1"})
            assert (await recv(ws))["type"] == "subscribed"
            await send(ws, {"type": "subscribe", "topic": "other"})
            assert (await recv(ws))["code"] == "forbidden"


@pytest.mark.e2e
@pytest.mark.anyio
async def test_a_flag_overrides_its_environment_variable(env_server: Server) -> None:
    async with client(env_server, token("o"), origin="https://flag.example") as ws:
        await welcome(ws)
    async with client(env_server, token("o"), origin="https://env.example") as ws:
        assert (await closed(ws))[0] == 4003


# --- dev mode -------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.anyio
async def test_dev_mode_prints_a_working_token_websocket_url_and_publish_command(
    request: pytest.FixtureRequest,
) -> None:
    dev = start_serve("--dev")
    try:
        with log_on_failure(request, dev):
            printed = dict(
                line.strip().split(":", 1) for line in dev.stdout().splitlines() if ":  " in line
            )
            printed = {k.strip(): v.strip() for k, v in printed.items()}
            assert "never use --dev in production" in dev.stdout()
            assert printed["websocket"] == f"ws://127.0.0.1:{dev.port}/ws?token={printed['token']}"
            verify_dev = JWTAuthenticator(secret=printed["JWT secret"])
            assert (await verify_dev.authenticate(printed["token"])).user_id == "demo"

            async with client(dev, printed["token"]) as ws:
                assert (await welcome(ws))["user"] == "demo"
                await send(ws, {"type": "subscribe", "topic": "demo:news"})
                assert (await recv(ws))["type"] == "subscribed"

                # Started as `python -m notifykit`: the printed command runs this same one, as
                # printed, from another terminal (no `notifykit` on PATH needed).
                command = shlex.split(printed["publish"])
                assert command[:4] == [sys.executable, "-m", "notifykit", "publish"]
                with anyio.fail_after(30):
                    result = await anyio.run_process(command, env=clean_env(), check=False)
                assert result.returncode == 0, result.stderr
                frame = await recv(ws)
                assert frame["id"] == result.stdout.decode().strip()
                assert (frame["event"], frame["data"]) == ("hello", {"text": "hi"})
    finally:
        dev.stop()
