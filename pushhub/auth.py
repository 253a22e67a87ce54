"""Who a connection is: JWT verification with PyJWT, and the channel permission rules.

Connection tokens carry ``sub`` (the user id) and ``exp``, both required, and optionally
``channels`` (patterns the user may subscribe to) and ``info`` (shown in presence).
Subscription tokens carry ``sub``, ``exp`` and ``channel``: a backend's grant of one
channel to one user. Algorithms are pinned by configuration; the key is chosen by the
algorithm family (HMAC: the shared secret; RSA/EC: the public key or the JWKS file), so
a token can never pick its own key. ``docs/security.md`` is the reference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushhub.channels import PATTERN_RE, ChannelOptions
from pushhub.config import Settings
from pushhub.errors import CloseCode, ConfigError, ErrorCode, ProtocolError
from pushhub.protocol import too_deep

HMAC_ALGORITHMS = {"HS256", "HS384", "HS512"}
PUBLIC_KEY_ALGORITHMS = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "EdDSA"}

#: Channel patterns one token may grant; a bound on per-subscribe matching work.
MAX_TOKEN_CHANNELS = 64


_CLOSE_TO_ERROR: dict[int, ErrorCode] = {
    CloseCode.TOKEN_EXPIRED: ErrorCode.TOKEN_EXPIRED,
    CloseCode.TOO_MANY_CONNECTIONS: ErrorCode.TOO_MANY_CONNECTIONS,
}


class AuthError(ProtocolError):
    """A token was refused. ``close_code`` is what a connection gets for it."""

    def __init__(self, message: str, close_code: int, request_id: int | None = None) -> None:
        code = _CLOSE_TO_ERROR.get(close_code, ErrorCode.UNAUTHORIZED)
        super().__init__(code, message, request_id)
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    expires_at: int
    channels: tuple[str, ...] = ()
    info: bytes | None = None


class TokenVerifier:
    """Verifies connection and subscription tokens against the configured keys."""

    def __init__(self, settings: Settings) -> None:
        self.algorithms = list(settings.jwt_algorithms) or _default_algorithms(settings)
        self._secret = settings.jwt_secret or None
        self._public: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        if settings.jwt_public_key:
            self._public = _public_key(settings.jwt_public_key)
        if settings.jwt_jwks_file:
            try:
                self._jwks = jwt.PyJWKSet.from_json(_read(settings.jwt_jwks_file, "jwt_jwks_file"))
            except (jwt.PyJWKSetError, json.JSONDecodeError, ValueError) as exc:
                raise ConfigError(
                    "jwt_jwks_file", settings.jwt_jwks_file, f"a JWKS ({exc})"
                ) from None
        self._audience = settings.jwt_audience or None
        self._issuer = settings.jwt_issuer or None
        self._leeway = settings.jwt_leeway
        self._max_info = settings.max_presence_info
        self._max_depth = settings.max_json_depth
        for alg in self.algorithms:
            if alg in HMAC_ALGORITHMS and self._secret is None:
                raise ConfigError("jwt_algorithms", alg, "HMAC algorithms with jwt_secret set")
            if alg in PUBLIC_KEY_ALGORITHMS and self._public is None and self._jwks is None:
                raise ConfigError(
                    "jwt_algorithms", alg, "RSA/EC algorithms with jwt_public_key or jwt_jwks_file"
                )
            if alg not in HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS:
                raise ConfigError(
                    "jwt_algorithms", alg, "a signing algorithm such as HS256 or RS256"
                )

    def _key_for(self, token: str) -> Any:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"malformed token: {exc}", CloseCode.UNAUTHORIZED) from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise AuthError(f"token algorithm {alg!r} is not allowed", CloseCode.UNAUTHORIZED)
        if alg in HMAC_ALGORITHMS:
            return self._secret
        if self._jwks is not None and "kid" in header:
            for key in self._jwks.keys:
                if key.key_id == header["kid"]:
                    return key
            raise AuthError("token key id is not in the JWKS", CloseCode.UNAUTHORIZED)
        if self._public is not None:
            return self._public
        raise AuthError("token has no key id to look up in the JWKS", CloseCode.UNAUTHORIZED)

    def _decode(self, token: object, required: list[str]) -> dict[str, Any]:
        if not isinstance(token, str) or not 1 <= len(token) <= 8192:
            raise AuthError(
                "token must be a string of at most 8192 characters", CloseCode.UNAUTHORIZED
            )
        key = self._key_for(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": required, "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token has expired", CloseCode.TOKEN_EXPIRED) from None
        except jwt.PyJWTError as exc:
            # InvalidTokenError, and InvalidKeyError when the token's algorithm does not
            # fit the configured key (an ES256 token against an RSA key).
            raise AuthError(f"invalid token: {exc}", CloseCode.UNAUTHORIZED) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 1 <= len(sub) <= 128:
            raise AuthError(
                "token 'sub' must be a string of 1-128 characters", CloseCode.UNAUTHORIZED
            )
        exp = claims.get("exp")
        if type(exp) is not int or not 0 < exp < 2**53:
            raise AuthError("token 'exp' must be an integer below 2^53", CloseCode.UNAUTHORIZED)
        return claims

    def connection(self, token: object) -> Identity:
        claims = self._decode(token, ["exp", "sub"])
        if "channel" in claims:
            # Subscription tokens grant one channel; they never stand for a connection.
            raise AuthError(
                "a subscription token cannot authenticate a connection", CloseCode.UNAUTHORIZED
            )
        channels = claims.get("channels", [])
        if isinstance(channels, str):
            channels = [channels]
        if (
            not isinstance(channels, list)
            or len(channels) > MAX_TOKEN_CHANNELS
            or not all(isinstance(c, str) and PATTERN_RE.fullmatch(c) for c in channels)
        ):
            raise AuthError(
                f"token 'channels' must be a list of at most {MAX_TOKEN_CHANNELS} patterns",
                CloseCode.UNAUTHORIZED,
            )
        info = claims.get("info")
        encoded = None
        if info is not None:
            if not isinstance(info, dict):
                raise AuthError("token 'info' must be an object", CloseCode.UNAUTHORIZED)
            try:
                encoded = orjson.dumps(info)
            except (orjson.JSONEncodeError, TypeError):
                raise AuthError(
                    "token 'info' is not encodable JSON", CloseCode.UNAUTHORIZED
                ) from None
            if too_deep(encoded, self._max_depth):
                raise AuthError(
                    f"token 'info' nests deeper than {self._max_depth} levels",
                    CloseCode.UNAUTHORIZED,
                )
            if len(encoded) > self._max_info:
                raise AuthError(
                    f"token 'info' is over {self._max_info} bytes", CloseCode.UNAUTHORIZED
                )
        return Identity(claims["sub"], claims["exp"], tuple(channels), encoded)

    def subscription(self, token: object, user: str | None, channel: str) -> int:
        """Verify a subscription token for ``user`` and ``channel``; its expiry."""
        claims = self._decode(token, ["exp", "sub", "channel"])
        if claims["channel"] != channel:
            raise AuthError("subscription token is for another channel", CloseCode.UNAUTHORIZED)
        if claims["sub"] != user:
            raise AuthError("subscription token is for another user", CloseCode.UNAUTHORIZED)
        exp: int = claims["exp"]
        return exp


def _public_key(path: str) -> Any:
    """The PEM public key at ``path``, loaded now so a bad file stops start-up."""
    try:
        key = serialization.load_pem_public_key(_read(path, "jwt_public_key").encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError("jwt_public_key", path, f"a PEM public key ({exc})") from None
    return key


def _default_algorithms(settings: Settings) -> list[str]:
    algorithms = []
    if settings.jwt_secret:
        algorithms.append("HS256")
    if settings.jwt_public_key:
        key = _public_key(settings.jwt_public_key)
        if isinstance(key, rsa.RSAPublicKey):
            algorithms.append("RS256")
        elif isinstance(key, ec.EllipticCurvePublicKey):
            algorithms.append("ES256")
        else:
            algorithms.append("EdDSA")
    if settings.jwt_jwks_file:
        algorithms += [a for a in ("RS256", "ES256") if a not in algorithms]
    return algorithms


def _read(path: str, key: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(key, path, f"a readable file ({exc.strerror})") from None


def enforcing(settings: Settings) -> bool:
    """Configuring any JWT key turns enforcement on everywhere."""
    return bool(settings.jwt_secret or settings.jwt_public_key or settings.jwt_jwks_file)


def channel_owner(channel: str) -> str | None:
    """The user a user-limited channel belongs to: the part after its ``#``. Channel
    names hold at most one ``#`` (``protocol.validate_channel``), so a rule such as
    ``notifications#*`` matches exactly one channel per user."""
    _, sep, owner = channel.partition("#")
    return owner if sep and owner and "#" not in owner else None


def may_subscribe(
    user: str | None,
    granted: tuple[str, ...],
    channel: str,
    options: ChannelOptions,
    subscription_token_ok: bool = False,
) -> bool:
    """The subscribe rule when enforcement is on (docs/security.md, "Channel permissions").

    A user-limited channel (``notifications#42``) admits its owner only. Otherwise the
    channel's ``subscribe`` option decides: ``public`` admits anyone, ``authenticated``
    any user with a valid token, ``granted`` (the default) users whose token lists a
    matching pattern or who present a subscription token for the channel.
    """
    owner = channel_owner(channel)
    if owner is not None:
        return user == owner
    if options.subscribe == "public":
        return True
    if user is None:
        return False
    if options.subscribe == "authenticated" or subscription_token_ok:
        return True
    return any(fnmatchcase(channel, pattern) for pattern in granted)
