"""JWTAuthenticator, mint_token and the default topic policy, as a specification.

Every refused token raises AuthenticationError (TokenExpired for an expired one) with a short
message that is shown to the client, so each refusal below checks the exact type, the exact
message, and that neither the token nor the key leaks into it.

Verification awaits nothing, so the tests run ``authenticate`` through ``verify()``, without an
event loop; tokens made from hand-written claims are verified on a clock frozen at ``NOW``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from notifykit.errors import AuthenticationError, ConfigurationError, TokenExpired
from notifykit.jwt import MAX_NUMERIC_DATE, JWTAuthenticator, mint_token
from notifykit.model import Principal
from notifykit.protocols import Authenticator
from notifykit.topics import claim_topics_policy, topic_matches

SECRET = "test-secret-" + "0123456789abcdef" * 4  # 76 bytes: enough for HS512 too
OTHER_SECRET = "other-secret-" + "fedcba9876543210" * 4
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z, "now" for tokens verified on the frozen clock
DAY = 86400

# --- helpers ------------------------------------------------------------------------------


def frozen() -> float:
    """The clock of every authenticator below that verifies hand-made claims: it stands still
    at NOW, so no test depends on when it runs."""
    return NOW


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: Any) -> str:
    return b64(json.dumps(obj).encode())


def compact(header: Any, payload: Any, signature: bytes = b"") -> str:
    """A token assembled by hand, so that it can be anything an attacker can send."""
    return f"{segment(header)}.{segment(payload)}.{b64(signature)}"


def hmac_signed(header: dict[str, Any], payload: Any, key: bytes, digest: Any) -> str:
    """A token signed with HMAC by hand, bypassing PyJWT's refusal of PEM-looking keys."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


_DROP = object()


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for user 42, with some changed (or dropped with ``_DROP``)."""
    base: dict[str, Any] = {"sub": "42", "iat": NOW, "exp": NOW + DAY}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


def verify(authenticator: JWTAuthenticator, token: Any) -> Principal:
    """``await authenticator.authenticate(token)`` run to completion without an event loop.

    Verification runs inline, awaiting nothing (its documented contract), so the tests below
    need no backend; this fails if that ever changes."""
    verifying = authenticator.authenticate(token)
    try:
        verifying.send(None)
    except StopIteration as done:
        principal: Principal = done.value
        return principal
    verifying.close()
    raise AssertionError("JWTAuthenticator.authenticate awaited something: it must run inline")


def hs256(payload: dict[str, Any], secret: str = SECRET, **kwargs: Any) -> str:
    return jwt.encode(payload, secret, algorithm=kwargs.pop("algorithm", "HS256"), **kwargs)


def pem_private(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def pem_public(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass(frozen=True)
class Keys:
    """PEM key pairs generated once per test module."""

    rsa_private: str
    rsa_public: str
    other_rsa_private: str
    ec_private: str
    ec_public: str
    ec384_private: str
    ec384_public: str
    ed25519_private: str
    ed25519_public: str
    ed448_private: str
    ed448_public: str
    weak_rsa_public: str


@pytest.fixture(scope="module")
def keys() -> Keys:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec384 = ec.generate_private_key(ec.SECP384R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    ed4 = ed448.Ed448PrivateKey.generate()
    return Keys(
        rsa_private=pem_private(rsa_key),
        rsa_public=pem_public(rsa_key),
        other_rsa_private=pem_private(other_rsa),
        ec_private=pem_private(ec_key),
        ec_public=pem_public(ec_key),
        ec384_private=pem_private(ec384),
        ec384_public=pem_public(ec384),
        ed25519_private=pem_private(ed),
        ed25519_public=pem_public(ed),
        ed448_private=pem_private(ed4),
        ed448_public=pem_public(ed4),
        weak_rsa_public=pem_public(weak_rsa),
    )


# --- accepted tokens ----------------------------------------------------------------------


def test_the_jwt_authenticator_implements_the_authenticator_protocol() -> None:
    assert isinstance(JWTAuthenticator(secret=SECRET), Authenticator)


@pytest.mark.anyio
async def test_authenticate_is_awaited_on_the_event_loop_of_any_backend() -> None:
    principal = await JWTAuthenticator(secret=SECRET, clock=frozen).authenticate(hs256(claims()))
    assert principal.user_id == "42"


def test_a_valid_hs256_token_proves_its_subject() -> None:
    payload = claims(sub="42")
    principal = verify(JWTAuthenticator(secret=SECRET, clock=frozen), hs256(payload))
    assert principal == Principal("42", claims=payload, expires_at=float(payload["exp"]))
    assert not principal.is_anonymous


def test_expires_at_is_the_exp_claim_as_a_float() -> None:
    exp = NOW + 1234
    principal = verify(JWTAuthenticator(secret=SECRET, clock=frozen), hs256(claims(exp=exp)))
    assert principal.expires_at == float(exp)
    assert isinstance(principal.expires_at, float)


def test_a_token_just_under_the_length_limit_is_accepted() -> None:
    pad = 8192 - len(hs256(claims(pad="")))
    token = hs256(claims(pad="p" * (pad * 3 // 4)))
    while len(token) > 8192:
        pad -= 1
        token = hs256(claims(pad="p" * (pad * 3 // 4)))
    assert len(token) > 8185
    assert (verify(JWTAuthenticator(secret=SECRET, clock=frozen), token)).user_id == "42"


def test_extra_claims_are_kept_in_the_principal() -> None:
    payload = claims(topics=["team:7:*"], roles={"admin": False}, name="Ada")
    principal = verify(JWTAuthenticator(secret=SECRET, clock=frozen), hs256(payload))
    assert principal.claims["topics"] == ["team:7:*"]
    assert principal.claims["roles"] == {"admin": False}
    assert principal.claims["name"] == "Ada"


def test_an_integer_subject_becomes_a_string() -> None:
    # Built by hand: PyJWT itself refuses to encode a non-string "sub".
    token = hmac_signed({"alg": "HS256"}, claims(sub=42), SECRET.encode(), hashlib.sha256)
    principal = verify(JWTAuthenticator(secret=SECRET, clock=frozen), token)
    assert principal.user_id == "42"


def test_a_custom_user_claim_names_the_user() -> None:
    auth = JWTAuthenticator(secret=SECRET, clock=frozen, user_claim="uid")
    principal = verify(auth, hs256(claims(sub=_DROP, uid="ada@example.com")))
    assert principal.user_id == "ada@example.com"


def test_a_user_id_of_256_characters_is_accepted() -> None:
    principal = verify(JWTAuthenticator(secret=SECRET, clock=frozen), hs256(claims(sub="u" * 256)))
    assert principal.user_id == "u" * 256


def test_leeway_accepts_a_token_that_expired_within_it() -> None:
    token = hs256(claims(exp=NOW - 5))
    with pytest.raises(TokenExpired):
        verify(JWTAuthenticator(secret=SECRET, clock=frozen), token)
    principal = verify(JWTAuthenticator(secret=SECRET, clock=frozen, leeway=60), token)
    assert principal.user_id == "42"


def test_leeway_accepts_a_token_that_becomes_valid_within_it() -> None:
    token = hs256(claims(nbf=NOW + 5, iat=NOW + 5))
    principal = verify(JWTAuthenticator(secret=SECRET, clock=frozen, leeway=60), token)
    assert principal.user_id == "42"


def test_a_token_whose_nbf_and_iat_have_passed_is_accepted() -> None:
    token = hs256(claims(nbf=NOW - 10, iat=NOW - 10))
    assert (verify(JWTAuthenticator(secret=SECRET, clock=frozen), token)).user_id == "42"


# --- time, on the injected clock -----------------------------------------------------------


class Clock:
    """A clock the test moves by hand, in Unix seconds."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_token_is_accepted_until_its_exp_on_the_authenticators_clock() -> None:
    clock = Clock()
    auth = JWTAuthenticator(secret=SECRET, clock=clock)
    token = hs256(claims(exp=NOW + 10))
    assert (verify(auth, token)).expires_at == NOW + 10
    clock.now = NOW + 9.999
    assert (verify(auth, token)).user_id == "42"
    clock.now = NOW + 10
    with pytest.raises(TokenExpired, match="token expired"):
        verify(auth, token)


def test_leeway_moves_the_end_of_a_token_and_its_expires_at_by_as_much() -> None:
    clock = Clock(NOW + 29)
    auth = JWTAuthenticator(secret=SECRET, clock=clock, leeway=30)
    token = hs256(claims(exp=NOW))
    assert (verify(auth, token)).expires_at == NOW + 30
    clock.now = NOW + 30
    with pytest.raises(TokenExpired):
        verify(auth, token)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_a_token_is_refused_until_its_nbf_or_iat_on_the_authenticators_clock(
    claim: str,
) -> None:
    clock = Clock(NOW - 0.001)
    auth = JWTAuthenticator(secret=SECRET, clock=clock)
    token = hs256(claims(**{"iat": NOW - 60, claim: NOW}))
    with pytest.raises(AuthenticationError, match=re.escape(f"token is not valid yet ({claim})")):
        verify(auth, token)
    clock.now = NOW
    assert (verify(auth, token)).user_id == "42"


def test_the_clock_decides_even_for_times_long_past() -> None:
    # A token of 1973, verified by an authenticator whose clock says 1972.
    auth = JWTAuthenticator(secret=SECRET, clock=lambda: 70_000_000)
    token = hs256(claims(iat=60_000_000, exp=100_000_000))
    assert (verify(auth, token)).expires_at == 100_000_000


def test_a_fractional_exp_is_kept_to_the_fraction() -> None:
    auth = JWTAuthenticator(secret=SECRET, clock=Clock(NOW + 0.25))
    principal = verify(auth, hs256(claims(exp=NOW + 0.5)))
    assert principal.expires_at == NOW + 0.5


def test_the_default_clock_is_the_system_clock() -> None:
    auth = JWTAuthenticator(secret=SECRET)
    assert auth.clock is time.time
    with pytest.raises(TokenExpired):
        verify(auth, hs256(claims(iat=NOW - DAY, exp=NOW)))  # long past by now
    token = hs256(claims(iat=int(time.time()), exp=int(time.time()) + DAY))
    assert (verify(auth, token)).user_id == "42"


def test_the_boundaries_of_the_time_range_are_accepted() -> None:
    auth = JWTAuthenticator(secret=SECRET, clock=lambda: 0.0)
    token = hs256(claims(iat=0, nbf=0.0, exp=MAX_NUMERIC_DATE))
    assert (verify(auth, token)).expires_at == 253402300799.0


def test_audience_and_issuer_are_accepted_when_they_match() -> None:
    auth = JWTAuthenticator(
        secret=SECRET, clock=frozen, audience="notifykit", issuer="https://id.example"
    )
    token = hs256(claims(aud=["billing", "notifykit"], iss="https://id.example"))
    assert (verify(auth, token)).user_id == "42"


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_every_allowed_hmac_algorithm_is_accepted(algorithm: str) -> None:
    auth = JWTAuthenticator(secret=SECRET, clock=frozen, algorithms=["HS256", "HS384", "HS512"])
    principal = verify(auth, hs256(claims(), algorithm=algorithm))
    assert principal.user_id == "42"


@pytest.mark.parametrize(
    ("algorithm", "private", "public"),
    [
        ("RS256", "rsa_private", "rsa_public"),
        ("RS512", "rsa_private", "rsa_public"),
        ("PS256", "rsa_private", "rsa_public"),
        ("ES256", "ec_private", "ec_public"),
        ("ES384", "ec384_private", "ec384_public"),
        ("EdDSA", "ed25519_private", "ed25519_public"),
        ("EdDSA", "ed448_private", "ed448_public"),
    ],
)
def test_a_token_signed_with_the_private_key_is_accepted(
    keys: Keys, algorithm: str, private: str, public: str
) -> None:
    auth = JWTAuthenticator(clock=frozen, public_key=getattr(keys, public), algorithms=[algorithm])
    payload = claims(topics=["a"])
    token = jwt.encode(payload, getattr(keys, private), algorithm=algorithm)
    principal = verify(auth, token)
    assert principal == Principal("42", claims=payload, expires_at=float(payload["exp"]))


def test_one_rsa_public_key_serves_rs_and_ps_algorithms(keys: Keys) -> None:
    auth = JWTAuthenticator(clock=frozen, public_key=keys.rsa_public, algorithms=["RS256", "PS384"])
    for algorithm in ("RS256", "PS384"):
        token = jwt.encode(claims(), keys.rsa_private, algorithm=algorithm)
        assert (verify(auth, token)).user_id == "42"


# --- refused tokens: the attack matrix ------------------------------------------------------


def hs256_auth(keys: Keys) -> JWTAuthenticator:
    return JWTAuthenticator(secret=SECRET, clock=frozen)


def rs256_auth(keys: Keys) -> JWTAuthenticator:
    return JWTAuthenticator(clock=frozen, public_key=keys.rsa_public, algorithms=["RS256"])


def audience_auth(keys: Keys) -> JWTAuthenticator:
    return JWTAuthenticator(
        secret=SECRET, clock=frozen, audience="notifykit", issuer="https://id.example"
    )


def leeway_auth(keys: Keys) -> JWTAuthenticator:
    return JWTAuthenticator(secret=SECRET, clock=frozen, leeway=30)


def tampered(keys: Keys) -> str:
    header, _, signature = hs256(claims(sub="42")).split(".")
    return f"{header}.{segment(claims(sub='admin'))}.{signature}"


def unsigned(keys: Keys) -> str:
    header, payload, _ = hs256(claims()).split(".")
    return f"{header}.{payload}."


def algorithm_confusion(keys: Keys) -> str:
    # The classic attack: the server's *public* key, which anyone may have, used as an HMAC
    # secret. A verifier that let the token pick the algorithm would accept it.
    return hmac_signed(
        {"alg": "HS256", "typ": "JWT"}, claims(), keys.rsa_public.encode(), hashlib.sha256
    )


def alg_none(spelling: str) -> Callable[[Keys], str]:
    return lambda keys: compact({"alg": spelling, "typ": "JWT"}, claims(sub="admin"))


def signed(payload: Any, header: dict[str, Any] | None = None) -> Callable[[Keys], str]:
    """An HS256 token signed with the right secret: only its content is wrong."""
    return lambda keys: hmac_signed(
        header or {"alg": "HS256"}, payload, SECRET.encode(), hashlib.sha256
    )


def text(token: str) -> Callable[[Keys], str]:
    return lambda keys: token


@dataclass(frozen=True)
class Attack:
    token: Callable[[Keys], Any]
    error: type[AuthenticationError]
    message: str
    authenticator: Callable[[Keys], JWTAuthenticator] = hs256_auth


INVALID_JWT = "token is not a valid JWT"
NO_SUB = "token has no usable 'sub' claim"
OUT_OF_RANGE = "token {!r} claim is not a time between 1970 and 9999"


def not_a_number(claim: str, value: Any) -> Attack:
    """A time claim that is no JSON number: a bad claim (never "token expired")."""
    return Attack(
        signed(claims(**{claim: value})),
        AuthenticationError,
        f"token {claim!r} claim is not a number",
    )


def out_of_range(claim: str, value: Any) -> Attack:
    """A time claim that is a number, but not a time between 1970 and 9999."""
    return Attack(signed(claims(**{claim: value})), AuthenticationError, OUT_OF_RANGE.format(claim))


ATTACKS: dict[str, Attack] = {
    # time
    "expired": Attack(signed(claims(exp=NOW - 60)), TokenExpired, "token expired"),
    "expired beyond the leeway": Attack(
        signed(claims(exp=NOW - 120)), TokenExpired, "token expired", leeway_auth
    ),
    "not valid yet (nbf)": Attack(
        signed(claims(nbf=NOW + DAY)), AuthenticationError, "token is not valid yet (nbf)"
    ),
    "issued in the future (iat)": Attack(
        signed(claims(iat=NOW + DAY)), AuthenticationError, "token is not valid yet (iat)"
    ),
    "no exp": Attack(signed(claims(exp=_DROP)), AuthenticationError, "token has no 'exp' claim"),
    "null exp": Attack(signed(claims(exp=None)), AuthenticationError, "token has no 'exp' claim"),
    "exp is a word": not_a_number("exp", "tomorrow"),
    "exp is a numeric string": not_a_number("exp", "99999999999"),
    "exp is infinite": not_a_number("exp", float("inf")),
    "exp is NaN": not_a_number("exp", float("nan")),
    "exp is true": not_a_number("exp", True),
    "exp is false": not_a_number("exp", False),
    "exp beyond a float": out_of_range("exp", 10**400),
    "exp is 1e308": out_of_range("exp", 1e308),
    "exp after the year 9999": out_of_range("exp", MAX_NUMERIC_DATE + 1),
    "exp before 1970": out_of_range("exp", -1),
    "nbf is a word": not_a_number("nbf", "soon"),
    "nbf is true": not_a_number("nbf", True),
    "nbf is 1e308": out_of_range("nbf", 1e308),
    "nbf before 1970": out_of_range("nbf", -1e9),
    "iat is a word": not_a_number("iat", "earlier"),
    "iat is true": not_a_number("iat", True),
    "iat is null": not_a_number("iat", None),
    "iat is 1e308": out_of_range("iat", 1e308),
    # signature and key
    "wrong secret": Attack(
        lambda keys: hs256(claims(), OTHER_SECRET),
        AuthenticationError,
        "token signature is invalid",
    ),
    "tampered payload": Attack(tampered, AuthenticationError, "token signature is invalid"),
    "signature stripped": Attack(unsigned, AuthenticationError, "token signature is invalid"),
    "wrong rsa key": Attack(
        lambda keys: jwt.encode(claims(), keys.other_rsa_private, algorithm="RS256"),
        AuthenticationError,
        "token signature is invalid",
        rs256_auth,
    ),
    # algorithm
    "HS512 when only HS256 is allowed": Attack(
        lambda keys: hs256(claims(), algorithm="HS512"),
        AuthenticationError,
        "token algorithm 'HS512' is not allowed",
    ),
    "RS256 when only HS256 is allowed": Attack(
        lambda keys: jwt.encode(claims(), keys.rsa_private, algorithm="RS256"),
        AuthenticationError,
        "token algorithm 'RS256' is not allowed",
    ),
    "ES256 when only RS256 is allowed": Attack(
        lambda keys: jwt.encode(claims(), keys.ec_private, algorithm="ES256"),
        AuthenticationError,
        "token algorithm 'ES256' is not allowed",
        rs256_auth,
    ),
    "algorithm confusion (HS256 signed with the RSA public key)": Attack(
        algorithm_confusion,
        AuthenticationError,
        "token algorithm 'HS256' is not allowed",
        rs256_auth,
    ),
    "alg none": Attack(
        alg_none("none"), AuthenticationError, "token algorithm 'none' is not allowed"
    ),
    "alg None": Attack(
        alg_none("None"), AuthenticationError, "token algorithm 'None' is not allowed"
    ),
    "alg NONE against RS256": Attack(
        alg_none("NONE"), AuthenticationError, "token algorithm 'NONE' is not allowed", rs256_auth
    ),
    "no alg": Attack(
        lambda keys: compact({"typ": "JWT"}, claims(), b"x"),
        AuthenticationError,
        "token header has no algorithm",
    ),
    "alg is a list": Attack(
        signed(claims(), {"alg": ["HS256"]}), AuthenticationError, "token algorithm is not allowed"
    ),
    "alg too long to repeat": Attack(
        alg_none("none" * 50), AuthenticationError, "token algorithm is not allowed"
    ),
    # audience and issuer
    "wrong audience": Attack(
        signed(claims(aud="billing", iss="https://id.example")),
        AuthenticationError,
        "token audience is invalid",
        audience_auth,
    ),
    "no audience when one is required": Attack(
        signed(claims(iss="https://id.example")),
        AuthenticationError,
        "token has no 'aud' claim",
        audience_auth,
    ),
    "an audience when none is configured": Attack(
        signed(claims(aud="billing")), AuthenticationError, "token audience is invalid"
    ),
    "wrong issuer": Attack(
        signed(claims(aud="notifykit", iss="https://evil.example")),
        AuthenticationError,
        "token issuer is invalid",
        audience_auth,
    ),
    "no issuer when one is required": Attack(
        signed(claims(aud="notifykit")),
        AuthenticationError,
        "token has no 'iss' claim",
        audience_auth,
    ),
    # the user claim
    "no sub": Attack(signed(claims(sub=_DROP)), AuthenticationError, NO_SUB),
    "sub is a list": Attack(signed(claims(sub=["42"])), AuthenticationError, NO_SUB),
    "sub is empty": Attack(signed(claims(sub="")), AuthenticationError, NO_SUB),
    "sub is true": Attack(signed(claims(sub=True)), AuthenticationError, NO_SUB),
    "sub is a float": Attack(signed(claims(sub=4.2)), AuthenticationError, NO_SUB),
    "sub is an object": Attack(signed(claims(sub={"id": "42"})), AuthenticationError, NO_SUB),
    "sub is null": Attack(signed(claims(sub=None)), AuthenticationError, NO_SUB),
    "sub is 257 characters": Attack(signed(claims(sub="u" * 257)), AuthenticationError, NO_SUB),
    "sub is an integer of 257 digits": Attack(
        signed(claims(sub=10**256)), AuthenticationError, NO_SUB
    ),
    "custom user claim missing": Attack(
        signed(claims()),
        AuthenticationError,
        "token has no usable 'uid' claim",
        lambda keys: JWTAuthenticator(secret=SECRET, clock=frozen, user_claim="uid"),
    ),
    # other claims and headers
    "jti is a number": Attack(
        signed(claims(jti=7)), AuthenticationError, "token 'jti' claim is not a string"
    ),
    "unsupported critical header": Attack(
        signed(claims(), {"alg": "HS256", "crit": ["exp-ext"], "exp-ext": 1}),
        AuthenticationError,
        INVALID_JWT,
    ),
    "payload is a JSON list": Attack(signed([claims()]), AuthenticationError, INVALID_JWT),
    # not a token at all
    "empty": Attack(text(""), AuthenticationError, "empty token"),
    "over-long": Attack(
        text("a" * 8000 + "." + "b" * 100 + "." + "c" * 92),
        AuthenticationError,
        "token is longer than 8192 characters",
    ),
    "garbage": Attack(text("hello, world"), AuthenticationError, INVALID_JWT),
    "two segments": Attack(text("abc.def"), AuthenticationError, INVALID_JWT),
    "four segments": Attack(text("a.b.c.d"), AuthenticationError, INVALID_JWT),
    "scheme left in": Attack(
        lambda keys: "Bearer " + hs256(claims()), AuthenticationError, INVALID_JWT
    ),
    "padding left in": Attack(text("eyJ=.eyJ=.sig="), AuthenticationError, INVALID_JWT),
    "header is not base64 JSON": Attack(text("abcd.abcd.abcd"), AuthenticationError, INVALID_JWT),
    "header is a JSON list": Attack(
        lambda keys: compact(["HS256"], claims(), b"x"), AuthenticationError, INVALID_JWT
    ),
    "header nested beyond recursion": Attack(
        lambda keys: f"{b64(b'[' * 3000)}.{segment(claims())}.",
        AuthenticationError,
        INVALID_JWT,
    ),
    "non-ascii": Attack(text("ä.ö.ü"), AuthenticationError, INVALID_JWT),
    "lone surrogate": Attack(text("\ud800.a.b"), AuthenticationError, INVALID_JWT),
    "bytes instead of text": Attack(
        lambda keys: hs256(claims()).encode(), AuthenticationError, "token must be a string"
    ),
    "None instead of text": Attack(text(None), AuthenticationError, "token must be a string"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_a_bad_token_is_refused_with_the_right_error_and_a_clear_message(
    keys: Keys, attack: Attack
) -> None:
    authenticator = attack.authenticator(keys)
    token = attack.token(keys)
    with pytest.raises(AuthenticationError) as caught:
        verify(authenticator, token)
    assert type(caught.value) is attack.error
    message = str(caught.value)
    assert message == attack.message
    assert SECRET not in message
    assert "PRIVATE" not in message
    assert "PUBLIC" not in message
    if isinstance(token, str):
        for part in token.split("."):
            assert len(part) < 8 or part not in message


# --- whatever the input, only AuthenticationError ----------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_claim_names = st.sampled_from(["sub", "exp", "nbf", "iat", "aud", "iss", "jti", "uid"])
_claims = st.dictionaries(_claim_names | st.text(max_size=8), _json, max_size=8)
_headers = st.dictionaries(
    st.sampled_from(["alg", "typ", "kid", "crit", "b64"]) | st.text(max_size=8),
    st.sampled_from(["HS256", "HS512", "RS256", "none", "None"]) | _json,
    max_size=5,
)


@given(token=st.text())
def test_arbitrary_text_raises_nothing_but_authentication_errors(token: str) -> None:
    with pytest.raises(AuthenticationError):
        verify(JWTAuthenticator(secret=SECRET, clock=frozen), token)


@given(header=_headers, payload=_json | _claims, signature=st.binary(max_size=64))
def test_arbitrary_unsigned_tokens_raise_nothing_but_authentication_errors(
    header: Any, payload: Any, signature: bytes
) -> None:
    with pytest.raises(AuthenticationError):
        verify(JWTAuthenticator(secret=SECRET, clock=frozen), compact(header, payload, signature))


_mostly_valid_claims = st.builds(lambda changes: {**claims(), **changes}, _claims)


@given(payload=_mostly_valid_claims | _claims | _json, extra_header=_headers)
def test_correctly_signed_tokens_with_any_claims_yield_a_usable_principal_or_a_refusal(
    payload: Any, extra_header: dict[str, Any]
) -> None:
    header = {**extra_header, "alg": "HS256"}
    token = hmac_signed(header, payload, SECRET.encode(), hashlib.sha256)
    try:
        principal = verify(JWTAuthenticator(secret=SECRET, clock=frozen), token)
    except AuthenticationError:
        return
    assert isinstance(principal.user_id, str)
    assert 1 <= len(principal.user_id) <= 256
    assert isinstance(principal.expires_at, float)
    assert principal.expires_at > NOW
    # Compared as JSON: NaN is in the domain, and NaN != NaN.
    assert json.dumps(principal.claims, sort_keys=True) == json.dumps(payload, sort_keys=True)


_time_values = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.integers(min_value=0, max_value=MAX_NUMERIC_DATE + 1)
    | st.floats()
    | st.floats(min_value=0, max_value=MAX_NUMERIC_DATE + 1)
    | st.none()
    | st.booleans()
    | st.text(max_size=12)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
_TIME_REFUSALS = {
    "token expired",
    "token has no 'exp' claim",
    *(f"token {claim!r} claim is not a number" for claim in ("exp", "nbf", "iat")),
    *(OUT_OF_RANGE.format(claim) for claim in ("exp", "nbf", "iat")),
    "token is not valid yet (nbf)",
    "token is not valid yet (iat)",
}


def _a_time(value: Any) -> bool:
    """A NumericDate notifykit accepts: a JSON number (not a boolean), 0 to the end of 9999."""
    return type(value) in (int, float) and 0 <= value <= MAX_NUMERIC_DATE


@given(
    claim=st.sampled_from(["exp", "nbf", "iat"]),
    value=_time_values,
    leeway=st.sampled_from([0, 30]),
)
def test_a_time_claim_is_accepted_only_as_a_time_in_range_and_then_checked_on_the_clock(
    claim: str, value: Any, leeway: int
) -> None:
    payload = {"sub": "42", "iat": NOW - DAY, "exp": NOW + DAY, claim: value}
    token = hmac_signed({"alg": "HS256"}, payload, SECRET.encode(), hashlib.sha256)
    auth = JWTAuthenticator(secret=SECRET, clock=frozen, leeway=leeway)
    if claim == "exp":
        valid_now = _a_time(value) and value > NOW - leeway
    else:
        valid_now = _a_time(value) and value <= NOW + leeway
    if valid_now:
        principal = verify(auth, token)
        assert principal.expires_at == payload["exp"] + leeway
        assert principal.expires_at is not None
        assert principal.expires_at <= MAX_NUMERIC_DATE + leeway
        return
    with pytest.raises(AuthenticationError) as refused:
        verify(auth, token)
    assert str(refused.value) in _TIME_REFUSALS
    assert (type(refused.value) is TokenExpired) == (str(refused.value) == "token expired")


@given(sub=st.text(min_size=1, max_size=256))
def test_any_non_empty_string_subject_of_at_most_256_characters_is_the_user_id(
    sub: str,
) -> None:
    token = hmac_signed({"alg": "HS256"}, claims(sub=sub), SECRET.encode(), hashlib.sha256)
    assert (verify(JWTAuthenticator(secret=SECRET, clock=frozen), token)).user_id == sub


# --- refused configurations -----------------------------------------------------------------

CONFIGURATIONS: dict[str, tuple[Callable[[Keys], dict[str, Any]], str]] = {
    "alg none": (lambda k: {"secret": SECRET, "algorithms": ["none"]}, "'none' algorithm"),
    "alg None beside HS256": (
        lambda k: {"secret": SECRET, "algorithms": ["HS256", "None"]},
        "'none' algorithm",
    ),
    "unknown algorithm": (
        lambda k: {"secret": SECRET, "algorithms": ["HS1024"]},
        "unknown JWT algorithm 'HS1024'",
    ),
    "algorithm in the wrong case": (
        lambda k: {"secret": SECRET, "algorithms": ["hs256"]},
        "unknown JWT algorithm 'hs256'",
    ),
    "a string instead of a list": (
        lambda k: {"secret": SECRET, "algorithms": "HS256"},
        "not a string",
    ),
    "an empty allow-list": (lambda k: {"secret": SECRET, "algorithms": []}, "at least one"),
    "hmac and rsa mixed": (
        lambda k: {"secret": SECRET, "public_key": k.rsa_public, "algorithms": ["HS256", "RS256"]},
        "algorithm confusion",
    ),
    "hmac and eddsa mixed": (
        lambda k: {"secret": SECRET, "algorithms": ["EdDSA", "HS512"]},
        "algorithm confusion",
    ),
    "no secret": (lambda k: {}, "HS256 needs secret"),
    "31-byte secret": (lambda k: {"secret": "x" * 31}, "at least 32 bytes"),
    "HS512 with a 32-byte secret": (
        lambda k: {"secret": "x" * 32, "algorithms": ["HS512"]},
        "at least 64 bytes for HS512",
    ),
    "a PEM key as the HMAC secret": (lambda k: {"secret": k.rsa_public}, "looks like a PEM"),
    "a public key for HMAC": (
        lambda k: {"secret": SECRET, "public_key": k.rsa_public},
        "public_key is set",
    ),
    "no public key": (lambda k: {"algorithms": ["RS256"]}, "RS256 needs public_key"),
    "a secret for RS256": (
        lambda k: {"secret": SECRET, "public_key": k.rsa_public, "algorithms": ["RS256"]},
        "secret is set",
    ),
    "a public key that is not PEM": (
        lambda k: {"public_key": "not a key", "algorithms": ["RS256"]},
        "not a PEM public key usable with RS256",
    ),
    "an EC key for RS256": (
        lambda k: {"public_key": k.ec_public, "algorithms": ["RS256"]},
        "not a PEM public key usable with RS256",
    ),
    "an RSA key beside ES256": (
        lambda k: {"public_key": k.rsa_public, "algorithms": ["RS256", "ES256"]},
        "not a PEM public key usable with ES256",
    ),
    "a P-384 key for ES256": (
        lambda k: {"public_key": k.ec384_public, "algorithms": ["ES256"]},
        "not a PEM public key usable with ES256",
    ),
    "a private key": (
        lambda k: {"public_key": k.rsa_private, "algorithms": ["RS256"]},
        "private key",
    ),
    "a private Ed25519 key": (
        lambda k: {"public_key": k.ed25519_private, "algorithms": ["EdDSA"]},
        "private key",
    ),
    "a 1024-bit RSA key": (
        lambda k: {"public_key": k.weak_rsa_public, "algorithms": ["RS256"]},
        "too weak for RS256",
    ),
    "negative leeway": (lambda k: {"secret": SECRET, "leeway": -1}, "leeway"),
    "infinite leeway": (lambda k: {"secret": SECRET, "leeway": float("inf")}, "leeway"),
    "empty user claim": (lambda k: {"secret": SECRET, "user_claim": ""}, "user_claim"),
    "a clock that is not callable": (
        lambda k: {"secret": SECRET, "clock": 1_767_225_600},
        "clock must be a callable",
    ),
    "empty audience": (lambda k: {"secret": SECRET, "audience": ""}, "audience"),
    "empty issuer": (lambda k: {"secret": SECRET, "issuer": ""}, "issuer"),
}


@pytest.mark.parametrize(("settings", "reason"), CONFIGURATIONS.values(), ids=CONFIGURATIONS.keys())
def test_settings_that_cannot_be_safe_are_refused_when_the_authenticator_is_built(
    keys: Keys, settings: Callable[[Keys], dict[str, Any]], reason: str
) -> None:
    kwargs = settings(keys)
    with pytest.raises(ConfigurationError, match=re.escape(reason)) as caught:
        JWTAuthenticator(**kwargs)
    assert SECRET not in str(caught.value)
    assert "BEGIN" not in str(caught.value)


def test_the_short_secret_refusal_says_why() -> None:
    with pytest.raises(ConfigurationError, match="brute-forced"):
        JWTAuthenticator(secret="correct horse battery staple")


def test_secret_length_is_counted_in_bytes() -> None:
    JWTAuthenticator(secret="ü" * 16)  # 16 characters, 32 bytes
    with pytest.raises(ConfigurationError):
        JWTAuthenticator(secret="u" * 16 + "ü" * 7)  # 23 characters, 30 bytes


def test_the_repr_shows_the_settings_but_never_the_key() -> None:
    shown = repr(JWTAuthenticator(secret=SECRET, audience="notifykit"))
    assert "notifykit" in shown
    assert "HS256" in shown
    assert SECRET not in shown


# --- mint_token -----------------------------------------------------------------------------


def test_a_minted_token_is_accepted_by_an_authenticator_with_the_same_secret() -> None:
    token = mint_token("42", secret=SECRET, ttl=300, claims={"topics": ["team:*"]})
    principal = verify(JWTAuthenticator(secret=SECRET), token)
    assert principal.user_id == "42"
    assert principal.claims["topics"] == ["team:*"]
    assert principal.expires_at == principal.claims["exp"]


def test_a_minted_token_carries_sub_iat_exp_and_the_optional_claims() -> None:
    token = mint_token("ada", secret=SECRET, ttl=300, algorithm="HS512", audience="nk", issuer="me")
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    payload = jwt.decode(token, SECRET, algorithms=["HS512"], audience="nk", issuer="me")
    assert payload["sub"] == "ada"
    assert payload["aud"] == "nk"
    assert payload["iss"] == "me"
    assert isinstance(payload["iat"], int)
    assert isinstance(payload["exp"], int)
    assert 300 <= payload["exp"] - payload["iat"] <= 301


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"secret": SECRET, "algorithm": "RS256"}, "HMAC only"),
        ({"secret": SECRET, "algorithm": "none"}, "HMAC only"),
        ({"secret": "short"}, "at least 32 bytes"),
        ({"secret": SECRET, "ttl": 0}, "ttl"),
        ({"secret": SECRET, "ttl": -60}, "ttl"),
        ({"secret": SECRET, "ttl": float("nan")}, "ttl"),
        ({"secret": SECRET, "claims": {"exp": 1}}, "may not set exp"),
        ({"secret": SECRET, "claims": {"sub": "admin"}}, "may not set sub"),
        ({"secret": SECRET, "claims": {"when": object()}}, "JSON-serializable"),
    ],
    ids=[
        "rsa",
        "none",
        "short secret",
        "zero ttl",
        "negative ttl",
        "nan ttl",
        "exp in claims",
        "sub in claims",
        "unserializable claim",
    ],
)
def test_mint_token_refuses_unusable_arguments(kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(reason)):
        mint_token("42", **kwargs)


@pytest.mark.parametrize("user_id", ["", "u" * 257])
def test_mint_token_refuses_an_unusable_user_id(user_id: str) -> None:
    with pytest.raises(ConfigurationError, match="user id"):
        mint_token(user_id, secret=SECRET)


# --- topic patterns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("news", "news", True),
        ("news", "news2", False),
        ("news", "new", False),
        ("team:*", "team:7", True),
        ("team:*", "team:7:chat", True),
        ("team:*", "team:", True),  # * matches the empty run too
        ("team:*", "team", False),
        ("team:*", "teams:7", False),
        ("doc:42:*", "doc:42:edits", True),
        ("doc:42:*", "doc:421:edits", False),
        ("doc:*:edits", "doc:42:edits", True),
        ("doc:*:edits", "doc:42:views", False),
        ("*:edits", "doc:42:edits", True),
        ("*", "anything/at@all", True),
        ("**", "x", True),
        ("a*b*c", "abc", True),
        ("a*b*c", "aXbYbZc", True),
        ("a*b*c", "acb", False),
        ("a*a", "a", False),  # the two fixed pieces may not overlap
        ("a*a", "aa", True),
        ("ab*ba", "aba", False),
        ("?", "x", False),  # ? is literal
        ("?", "?", True),  # ... it only matches itself
        ("room[1]", "room1", False),  # [ is literal
        ("room.*", "roomX", False),  # . is literal
        ("", "news", False),
    ],
)
def test_a_topic_pattern_matches_exact_names_and_star_wildcards(
    pattern: str, topic: str, expected: bool
) -> None:
    assert topic_matches(pattern, topic) is expected


def test_a_question_mark_in_a_pattern_only_matches_itself() -> None:
    assert topic_matches("a?c", "a?c")
    assert not topic_matches("a?c", "abc")


def test_topic_matching_refuses_non_strings() -> None:
    assert topic_matches(["*"], "news") is False  # type: ignore[arg-type]
    assert topic_matches("*", 7) is False  # type: ignore[arg-type]


def _reference(pattern: str, topic: str) -> bool:
    regex = ".*".join(re.escape(piece) for piece in pattern.split("*"))
    return re.fullmatch(regex, topic, re.DOTALL) is not None


@given(
    pattern=st.text(alphabet="ab*?[.", max_size=10), topic=st.text(alphabet="ab?[.", max_size=12)
)
def test_topic_matching_agrees_with_a_regular_expression_reference(
    pattern: str, topic: str
) -> None:
    assert topic_matches(pattern, topic) is _reference(pattern, topic)


def test_a_pathological_pattern_is_matched_quickly_enough_to_finish() -> None:
    # A backtracking matcher would take exponential time here; this one is linear.
    assert not topic_matches("a*" * 100 + "b", "a" * 256)


# --- the default topic policy ---------------------------------------------------------------


def principal(**claims: Any) -> Principal:
    return Principal("42", claims=claims, expires_at=None)


def test_the_topics_claim_lists_the_topics_a_user_may_subscribe_to() -> None:
    policy = claim_topics_policy()
    user = principal(topics=["news", "team:7:*"])
    assert policy(user, "news") is True
    assert policy(user, "team:7:chat") is True
    assert policy(user, "team:8:chat") is False
    assert policy(user, "sports") is False


def test_a_single_string_topics_claim_is_one_pattern() -> None:
    policy = claim_topics_policy()
    assert policy(principal(topics="team:*"), "team:7") is True
    assert policy(principal(topics="team:*"), "news") is False


@pytest.mark.parametrize(
    "value", [None, 7, True, {"news": True}, [], "", [7, None, ["news"]]], ids=repr
)
def test_a_missing_or_unusable_topics_claim_allows_no_topic(value: Any) -> None:
    policy = claim_topics_policy()
    assert policy(principal(topics=value), "news") is False
    assert policy(principal(), "news") is False


def test_non_string_entries_in_the_topics_claim_are_ignored() -> None:
    assert claim_topics_policy()(principal(topics=[7, "news"]), "news") is True


def test_a_star_in_the_topics_claim_allows_every_topic() -> None:
    assert claim_topics_policy()(principal(topics=["*"]), "anything") is True


def test_anonymous_principals_may_subscribe_to_nothing() -> None:
    anonymous = Principal(None, claims={"topics": ["*"]})
    assert claim_topics_policy()(anonymous, "news") is False


def test_the_policy_can_read_another_claim() -> None:
    policy = claim_topics_policy("channels")
    assert policy(principal(channels=["news"], topics=["sports"]), "news") is True
    assert policy(principal(channels=["news"], topics=["sports"]), "sports") is False


def test_the_policy_claim_name_must_be_a_non_empty_string() -> None:
    with pytest.raises(ConfigurationError):
        claim_topics_policy("")


def test_the_policy_reads_the_topics_of_a_verified_token() -> None:
    token = mint_token("42", secret=SECRET, claims={"topics": ["doc:42:*"]})
    verified = verify(JWTAuthenticator(secret=SECRET), token)
    policy = claim_topics_policy()
    assert policy(verified, "doc:42:edits") is True
    assert policy(verified, "doc:43:edits") is False
