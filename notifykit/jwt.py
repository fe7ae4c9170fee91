"""JSON Web Token authentication (PyJWT).

::

    auth = JWTAuthenticator(secret=os.environ["NOTIFYKIT_JWT_SECRET"], audience="notifykit")
    principal = await auth.authenticate(token)    # Principal("42", claims={...}, expires_at=...)

:class:`JWTAuthenticator` verifies a token against an explicit algorithm allow-list that is
checked when it is built: ``none`` is refused, HMAC and public-key algorithms cannot be mixed
(the "algorithm confusion" attack), and keys too weak for their algorithm are refused. A token
is accepted only with a valid signature and an ``exp`` claim; ``nbf`` and ``iat`` are checked
when present, ``aud`` and ``iss`` when configured. ``exp``, ``nbf`` and ``iat`` must be JSON
numbers (not booleans) from 0 to :data:`MAX_NUMERIC_DATE` (the end of year 9999); they are
compared with the authenticator's ``clock`` (``time.time`` unless one is injected, e.g. by
tests). Every PyJWT error is translated into :class:`~notifykit.errors.AuthenticationError` (or
:class:`~notifykit.errors.TokenExpired`) with a short message that is safe to show to the
client: it never contains the token or a key.

:func:`mint_token` makes HMAC tokens, for ``notifykit token``, development and tests.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt import exceptions as jwt_errors

from .errors import AuthenticationError, ConfigurationError, InvalidNotification, TokenExpired
from .model import Principal, validate_user_id
from .wire import MAX_TOKEN_LENGTH

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from jwt.algorithms import AllowedPublicKeys
    from jwt.types import Options

__all__ = ["MAX_NUMERIC_DATE", "JWTAuthenticator", "mint_token"]

logger = logging.getLogger("notifykit.jwt")

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
"""Algorithms verified with a shared ``secret``."""

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""Algorithms verified with a ``public_key``."""

MAX_NUMERIC_DATE = 253_402_300_799
"""The latest ``exp``, ``nbf`` or ``iat`` accepted: 9999-12-31T23:59:59Z, in Unix seconds.

A time claim outside 0 to this is refused as a bad claim, so that ``expires_at`` (and what a
client is told in ``welcome``) stays a date a calendar, a float and a JSON reader all hold."""

_TIME_CLAIMS = ("iat", "nbf", "exp")  # checked in this order, as PyJWT does

_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
# RFC 7518 section 3.2: an HMAC key at least as long as the hash output.

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_SHOWABLE_ALG = re.compile(r"[A-Za-z0-9]{1,16}")
_PRIVATE_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
_PUBLIC_KEY_TYPES = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)
_RESERVED_MINT_CLAIMS = frozenset({"sub", "iat", "exp", "aud", "iss"})


class JWTAuthenticator:
    """An :class:`~notifykit.protocols.Authenticator` for signed JSON Web Tokens.

    Keyword arguments:

    * ``secret`` — the shared HMAC secret, for ``HS256``/``HS384``/``HS512``; at least as long
      as the hash (32, 48, 64 bytes), or a guessable secret could be brute-forced offline from
      any token it signed.
    * ``public_key`` — a PEM public key, for ``RS*``, ``PS*`` (RSA, 2048 bits or more),
      ``ES*`` (the curve matching the algorithm) and ``EdDSA`` (Ed25519/Ed448). A private key is
      refused: the server only verifies, so it should not hold what can mint tokens.
    * ``algorithms`` — the allow-list (default ``("HS256",)``). ``none`` is refused; so is a
      list mixing HMAC and public-key algorithms, which would let a token signed with the
      *public* key as an HMAC secret pass.
    * ``audience`` / ``issuer`` — when set, tokens must carry exactly this ``aud`` (or list it)
      and ``iss``. When ``audience`` is not set, a token that has an ``aud`` claim is refused
      (it was meant for someone else).
    * ``leeway`` — seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
    * ``user_claim`` — the claim holding the user id (default ``sub``); a string, or an integer
      that becomes a string, of 1-256 characters.
    * ``clock`` — a function returning the current time in Unix seconds (default
      ``time.time``), against which ``exp``, ``nbf`` and ``iat`` are checked; the principal's
      ``expires_at`` is on the same scale. Tests inject one to move time without sleeping.

    Settings that cannot work raise :class:`~notifykit.errors.ConfigurationError` here, not at
    the first connection. Verification runs inline on the event loop: it takes microseconds
    for HMAC and well under a millisecond for the public-key algorithms.
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        algorithms: Sequence[str] = ("HS256",),
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0,
        user_claim: str = "sub",
        clock: Callable[[], float] = time.time,
    ) -> None:
        allowed = _check_algorithms(algorithms)
        if allowed <= HMAC_ALGORITHMS:
            if public_key is not None:
                raise ConfigurationError(
                    "public_key is set but only HMAC algorithms are allowed; "
                    "HMAC tokens are verified with secret"
                )
            self._keys: dict[str, bytes | AllowedPublicKeys] = {
                alg: _prepare_hmac_secret(secret, alg) for alg in sorted(allowed)
            }
        else:
            if secret is not None:
                raise ConfigurationError(
                    "secret is set but only public-key algorithms are allowed; "
                    "they are verified with public_key"
                )
            self._keys = {alg: _prepare_public_key(public_key, alg) for alg in sorted(allowed)}
        if audience is not None and (not isinstance(audience, str) or not audience):
            raise ConfigurationError("audience must be a non-empty string or None")
        if issuer is not None and (not isinstance(issuer, str) or not issuer):
            raise ConfigurationError("issuer must be a non-empty string or None")
        if (
            isinstance(leeway, bool)
            or not isinstance(leeway, int | float)
            or not math.isfinite(leeway)
            or leeway < 0
        ):
            raise ConfigurationError("leeway must be a finite number of seconds, 0 or more")
        if not isinstance(user_claim, str) or not user_claim:
            raise ConfigurationError("user_claim must be a non-empty claim name")
        if not callable(clock):
            raise ConfigurationError("clock must be a callable returning Unix seconds")
        self.algorithms: tuple[str, ...] = tuple(sorted(allowed))
        """The allow-list, sorted."""
        self.audience = audience
        """The required ``aud``, or None."""
        self.issuer = issuer
        """The required ``iss``, or None."""
        self.leeway = float(leeway)
        """Seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``."""
        self.user_claim = user_claim
        """The claim that holds the user id."""
        self.clock = clock
        """Returns the current time in Unix seconds; ``exp``, ``nbf`` and ``iat`` are checked
        against it."""
        options: Options = {
            "require": ["exp"],
            "verify_signature": True,
            # The time claims are checked below, against ``clock`` and within the sane range.
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": True,
            "verify_iss": True,
            # The user claim is checked below, where an integer ``sub`` is accepted.
            "verify_sub": False,
            "verify_jti": True,
            "enforce_minimum_key_length": True,
        }
        self._decoder = jwt.PyJWT(options)

    def __repr__(self) -> str:
        return (
            f"JWTAuthenticator(algorithms={list(self.algorithms)!r}, audience={self.audience!r}, "
            f"issuer={self.issuer!r}, leeway={self.leeway!r}, user_claim={self.user_claim!r})"
        )

    async def authenticate(self, token: str) -> Principal:
        """Return the principal ``token`` proves; see :meth:`Authenticator.authenticate
        <notifykit.protocols.Authenticator.authenticate>` for the contract.

        Raises :class:`~notifykit.errors.TokenExpired` ("token expired") for an expired token
        and :class:`~notifykit.errors.AuthenticationError` for anything else wrong with it —
        never another exception, whatever the input.
        """
        return self._verify(token)

    def _verify(self, token: object) -> Principal:
        if not isinstance(token, str):
            raise AuthenticationError("token must be a string")
        if not token:
            raise AuthenticationError("empty token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthenticationError(f"token is longer than {MAX_TOKEN_LENGTH} characters")
        if _COMPACT_JWS.fullmatch(token) is None:
            raise AuthenticationError("token is not a valid JWT")
        try:
            claims = self._decode(token)
        except AuthenticationError:
            raise
        except Exception:
            # Whatever a malformed token trips over inside PyJWT or cryptography, the client
            # only learns that it was refused; the server log says where.
            logger.warning("unexpected error while verifying a token", exc_info=True)
            raise AuthenticationError("token could not be verified") from None
        expires_at = self._check_times(claims)
        return Principal(self._user_id(claims), claims=claims, expires_at=expires_at)

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt_errors.PyJWTError:
            raise AuthenticationError("token is not a valid JWT") from None
        alg = header.get("alg")
        if alg is None:
            raise AuthenticationError("token header has no algorithm")
        if not isinstance(alg, str) or alg not in self._keys:
            if isinstance(alg, str) and _SHOWABLE_ALG.fullmatch(alg):
                raise AuthenticationError(f"token algorithm {alg!r} is not allowed")
            raise AuthenticationError("token algorithm is not allowed")
        try:
            return self._decoder.decode(
                token,
                key=self._keys[alg],
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
            )
        except jwt_errors.PyJWTError as exc:
            raise _translate(exc) from None

    def _check_times(self, claims: Mapping[str, Any]) -> float:
        """Check ``iat``, ``nbf`` and ``exp`` against the clock; return when the token ends.

        The connection lasts as long as this authenticator would still accept the token:
        until ``exp`` plus the leeway."""
        now = self.clock()
        times = {name: _numeric_date(claims, name) for name in _TIME_CLAIMS if name in claims}
        for name in ("iat", "nbf"):
            when = times.get(name)
            if when is not None and when > now + self.leeway:
                raise AuthenticationError(f"token is not valid yet ({name})")
        # PyJWT has already refused a missing or null ``exp``.
        expires_at = times["exp"] + self.leeway
        if expires_at <= now:
            raise TokenExpired("token expired")
        return expires_at

    def _user_id(self, claims: Mapping[str, Any]) -> str:
        value = claims.get(self.user_claim)
        unusable = AuthenticationError(f"token has no usable {self.user_claim!r} claim")
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                value = str(value)
            except ValueError:  # more digits than int-to-str conversion allows
                raise unusable from None
        try:
            return validate_user_id(value)
        except InvalidNotification:
            raise unusable from None


def _translate(exc: jwt_errors.PyJWTError) -> AuthenticationError:
    """The client-safe error for a PyJWT error (PyJWT's own messages are never passed on)."""
    if isinstance(exc, jwt_errors.InvalidSignatureError):
        return AuthenticationError("token signature is invalid")
    if isinstance(exc, jwt_errors.MissingRequiredClaimError):
        return AuthenticationError(f"token has no {exc.claim!r} claim")
    if isinstance(exc, jwt_errors.InvalidAudienceError):
        return AuthenticationError("token audience is invalid")
    if isinstance(exc, jwt_errors.InvalidIssuerError):
        return AuthenticationError("token issuer is invalid")
    if isinstance(exc, jwt_errors.InvalidJTIError):
        return AuthenticationError("token 'jti' claim is not a string")
    if isinstance(exc, jwt_errors.InvalidAlgorithmError):
        return AuthenticationError("token algorithm is not allowed")
    if isinstance(exc, jwt_errors.DecodeError):
        return AuthenticationError("token is not a valid JWT")
    if isinstance(exc, jwt_errors.InvalidKeyError):  # pragma: no cover - keys are checked up front
        return AuthenticationError("token could not be verified")
    return AuthenticationError("token is invalid")


def _numeric_date(claims: Mapping[str, Any], name: str) -> float:
    """The time claim ``name`` as a float, if it is a JSON number from 0 to
    :data:`MAX_NUMERIC_DATE`; PyJWT would also take ``true`` and ``"1700000000"``, we do not."""
    value = claims[name]
    finite_float = isinstance(value, float) and math.isfinite(value)
    if not (finite_float or (isinstance(value, int) and not isinstance(value, bool))):
        raise AuthenticationError(f"token {name!r} claim is not a number")
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise AuthenticationError(f"token {name!r} claim is not a time between 1970 and 9999")
    return float(value)


# --- configuration checks -----------------------------------------------------------------


def _check_algorithms(algorithms: Sequence[str]) -> frozenset[str]:
    if isinstance(algorithms, str):
        raise ConfigurationError(
            f"algorithms must be a list of names such as [{algorithms!r}], not a string"
        )
    allowed: set[str] = set()
    for alg in algorithms:
        if isinstance(alg, str) and alg.lower() == "none":
            raise ConfigurationError(
                "the 'none' algorithm is refused: it would accept unsigned tokens"
            )
        if alg not in HMAC_ALGORITHMS and alg not in ASYMMETRIC_ALGORITHMS:
            known = ", ".join(sorted(HMAC_ALGORITHMS) + sorted(ASYMMETRIC_ALGORITHMS))
            raise ConfigurationError(f"unknown JWT algorithm {alg!r}; choose from {known}")
        allowed.add(alg)
    if not allowed:
        raise ConfigurationError("algorithms must name at least one algorithm")
    if allowed & HMAC_ALGORITHMS and allowed & ASYMMETRIC_ALGORITHMS:
        raise ConfigurationError(
            "algorithms mixes HMAC and public-key algorithms; a token signed with the public "
            "key as an HMAC secret could then pass (algorithm confusion). Allow one family."
        )
    return frozenset(allowed)


def _prepare_hmac_secret(secret: str | None, alg: str) -> bytes:
    if secret is None:
        raise ConfigurationError(f"{alg} needs secret (the shared HMAC secret)")
    if not isinstance(secret, str):
        raise ConfigurationError("secret must be a string")
    minimum = _HMAC_MIN_BYTES[alg]
    if len(secret.encode()) < minimum:
        raise ConfigurationError(
            f"the HMAC secret must be at least {minimum} bytes for {alg} (RFC 7518 3.2): "
            "a shorter secret can be brute-forced offline from any token it signed"
        )
    try:
        prepared = jwt.get_algorithm_by_name(alg).prepare_key(secret)
    except (jwt_errors.PyJWTError, ValueError, TypeError):
        raise ConfigurationError(
            "secret looks like a PEM or SSH key; an HMAC secret must be a random string"
        ) from None
    if not isinstance(prepared, bytes):  # pragma: no cover - PyJWT always returns bytes
        raise ConfigurationError("secret is not a usable HMAC secret")
    return prepared


def _prepare_public_key(public_key: str | None, alg: str) -> AllowedPublicKeys:
    if public_key is None:
        raise ConfigurationError(f"{alg} needs public_key (a PEM public key)")
    if not isinstance(public_key, str):
        raise ConfigurationError("public_key must be a PEM string")
    algorithm = jwt.get_algorithm_by_name(alg)
    try:
        key = algorithm.prepare_key(public_key)
    except Exception:
        raise ConfigurationError(
            f"public_key is not a PEM public key usable with {alg} "
            "(RS*/PS*: RSA; ES256/384/512: EC P-256/384/521; EdDSA: Ed25519 or Ed448)"
        ) from None
    if isinstance(key, _PRIVATE_KEY_TYPES):
        raise ConfigurationError(
            "public_key holds a private key; give the server only the public key"
        )
    if not isinstance(key, _PUBLIC_KEY_TYPES):  # pragma: no cover - PyJWT checks key types
        raise ConfigurationError(f"public_key is not usable with {alg}")
    weak = algorithm.check_key_length(key)
    if weak is not None:
        raise ConfigurationError(f"public_key is too weak for {alg}: {weak}")
    return key


# --- minting ------------------------------------------------------------------------------


def mint_token(
    user_id: str,
    *,
    secret: str,
    ttl: float = 3600,
    algorithm: str = "HS256",
    claims: Mapping[str, Any] | None = None,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """Return an HMAC-signed JWT for ``user_id`` that expires ``ttl`` seconds from now.

    It carries ``sub``, ``iat``, ``exp`` (whole seconds), ``aud`` and ``iss`` when given, and
    every extra claim in ``claims`` (e.g. ``{"topics": ["team:7:*"]}``); ``claims`` may not
    set the five standard ones, which have their own arguments. The secret must satisfy the
    same rules as :class:`JWTAuthenticator`'s. Raises
    :class:`~notifykit.errors.ConfigurationError` for unusable arguments.
    """
    if algorithm not in HMAC_ALGORITHMS:
        raise ConfigurationError(
            f"mint_token signs with HMAC only (HS256, HS384, HS512), not {algorithm!r}"
        )
    key = _prepare_hmac_secret(secret, algorithm)
    try:
        validate_user_id(user_id)
    except InvalidNotification as exc:
        raise ConfigurationError(str(exc)) from None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise ConfigurationError("ttl must be a positive, finite number of seconds")
    extra = dict(claims or {})
    reserved = sorted(_RESERVED_MINT_CLAIMS & extra.keys())
    if reserved:
        raise ConfigurationError(
            f"claims may not set {', '.join(reserved)}; use the arguments of mint_token"
        )
    now = int(time.time())  # whole seconds, so that exp - iat is the ttl (rounded up)
    payload: dict[str, Any] = {
        **extra,
        "sub": user_id,
        "iat": now,
        "exp": now + math.ceil(ttl),
    }
    if audience is not None:
        payload["aud"] = audience
    if issuer is not None:
        payload["iss"] = issuer
    try:
        return jwt.encode(payload, key, algorithm=algorithm)
    except (TypeError, ValueError):
        raise ConfigurationError("claims must be JSON-serializable") from None
