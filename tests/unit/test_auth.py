"""Tokens and channel permissions as units (pushhub/auth.py), in process.

tests/security/test_tokens.py and test_permissions.py attack real nodes with forged
tokens; this file pins the verifier's own rules (claims, leeway, key choice,
configuration errors) and the subscribe rule, one case at a time.

TokenVerifier has no clock seam: PyJWT reads the wall clock. Expiry and leeway cases use
margins of tens of seconds either side, so no run is slow enough to cross one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from pushhub.auth import (
    MAX_TOKEN_CHANNELS,
    AuthError,
    Identity,
    TokenVerifier,
    channel_owner,
    enforcing,
    may_subscribe,
)
from pushhub.channels import ChannelOptions
from pushhub.config import Settings
from pushhub.errors import CloseCode, ConfigError, ErrorCode
from tests.security.tokens import EC, RSA, KeyPair, hs256_keyed_with, write_key_files

#: HMAC secrets long enough for HS512 (PyJWT warns about shorter ones).
SECRET = "unit-auth-secret-" + "0123456789abcdef" * 4
OTHER_SECRET = "unit-auth-other-" + "fedcba9876543210" * 4


def body(sub: Any = "alice", ttl: float = 300, **extra: Any) -> dict[str, Any]:
    """Claims with ``sub`` and ``exp`` (``ttl`` seconds from now); ``extra`` adds claims,
    None removes one. Parameters make claims inside the test (a lambda), never at import:
    a token made at collection may have expired by the time the test runs."""
    claims: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl), **extra}
    return {k: v for k, v in claims.items() if v is not None}


def hs(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def signed(claims: dict[str, Any], pair: KeyPair, kid: str | None = None) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, pair.private, algorithm=pair.algorithm, headers=headers)


def refusal(call: Any, *args: Any) -> AuthError:
    with pytest.raises(AuthError) as caught:
        call(*args)
    return caught.value


def unauthorized(call: Any, *args: Any) -> str:
    """The message of an unauthorized (4501) refusal of ``call(*args)``."""
    error = refusal(call, *args)
    assert (error.close_code, error.code) == (CloseCode.UNAUTHORIZED, ErrorCode.UNAUTHORIZED)
    return error.message


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(Settings(jwt_secret=SECRET))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_key_files(tmp_path_factory.mktemp("keys"))


# -- connection tokens ---------------------------------------------------------------------


def test_a_valid_connection_token_gives_its_user_expiry_and_grants(
    verifier: TokenVerifier,
) -> None:
    claims = body(channels=["room:*", "news"], info={"name": "Alice"})

    identity = verifier.connection(hs(claims))

    assert identity == Identity("alice", claims["exp"], ("room:*", "news"), b'{"name":"Alice"}')


def test_a_token_without_channels_or_info_grants_nothing(verifier: TokenVerifier) -> None:
    identity = verifier.connection(hs(body()))

    assert (identity.channels, identity.info) == ((), None)


def test_a_single_channel_pattern_as_a_string_is_one_grant(verifier: TokenVerifier) -> None:
    assert verifier.connection(hs(body(channels="room:*"))).channels == ("room:*",)


def test_as_many_channel_patterns_as_allowed_are_accepted(verifier: TokenVerifier) -> None:
    grants = [f"c{i}:*" for i in range(MAX_TOKEN_CHANNELS)]

    assert verifier.connection(hs(body(channels=grants))).channels == tuple(grants)


@pytest.mark.parametrize(
    "channels",
    [
        {"room:*": True},
        42,
        [f"c{i}" for i in range(MAX_TOKEN_CHANNELS + 1)],
        ["room:*", 7],
        ["a b"],
        [""],
        ["x" * 256],
    ],
    ids=["object", "number", "too-many", "not-a-string", "space", "empty", "too-long"],
)
def test_channels_that_are_not_a_list_of_patterns_are_refused(
    verifier: TokenVerifier, channels: Any
) -> None:
    message = unauthorized(verifier.connection, hs(body(channels=channels)))

    assert "'channels'" in message


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (["a"], "token 'info' must be an object"),
        ("Alice", "token 'info' must be an object"),
        ({"n": 2**70}, "token 'info' is not encodable JSON"),
        ({"a": {"b": {"c": {}}}}, "token 'info' nests deeper than 3 levels"),
        ({"name": "x" * 100}, "token 'info' is over 64 bytes"),
    ],
)
def test_info_must_be_a_small_shallow_json_object(info: Any, expected: str) -> None:
    verifier = TokenVerifier(Settings(jwt_secret=SECRET, max_json_depth=3, max_presence_info=64))

    assert unauthorized(verifier.connection, hs(body(info=info))) == expected


def test_info_of_exactly_the_limits_is_accepted() -> None:
    verifier = TokenVerifier(Settings(jwt_secret=SECRET, max_json_depth=3, max_presence_info=64))
    info = {"a": {"b": {"c": "x" * 44}}}  # three levels, 64 bytes encoded

    identity = verifier.connection(hs(body(info=info)))

    assert identity.info is not None
    assert len(identity.info) == 64
    assert json.loads(identity.info) == info


def test_a_subscription_token_never_authenticates_a_connection(verifier: TokenVerifier) -> None:
    token = hs(body(channel="private:1"))

    assert unauthorized(verifier.connection, token) == (
        "a subscription token cannot authenticate a connection"
    )


# -- expiry and leeway ---------------------------------------------------------------------


def test_an_expired_token_is_refused_as_expired_with_its_own_close_code(
    verifier: TokenVerifier,
) -> None:
    error = refusal(verifier.connection, hs(body(ttl=-60)))

    assert (error.close_code, error.code) == (CloseCode.TOKEN_EXPIRED, ErrorCode.TOKEN_EXPIRED)
    assert error.message == "token has expired"


def test_a_token_expired_within_the_leeway_is_still_accepted() -> None:
    lenient = TokenVerifier(Settings(jwt_secret=SECRET, jwt_leeway=120))
    strict = TokenVerifier(Settings(jwt_secret=SECRET, jwt_leeway=0))
    token = hs(body(ttl=-30))

    assert lenient.connection(token).user == "alice"
    assert refusal(strict.connection, token).close_code == CloseCode.TOKEN_EXPIRED


def test_a_token_not_yet_valid_is_refused_unless_within_the_leeway() -> None:
    lenient = TokenVerifier(Settings(jwt_secret=SECRET, jwt_leeway=120))
    strict = TokenVerifier(Settings(jwt_secret=SECRET, jwt_leeway=0))
    token = hs(body(nbf=int(time.time()) + 30))

    assert lenient.connection(token).user == "alice"
    assert unauthorized(strict.connection, token).startswith("invalid token")


# -- the claims pushhub requires -----------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        (lambda: body(sub=None), "invalid token"),
        (lambda: body(sub=""), "token 'sub' must be a string of 1-128 characters"),
        (lambda: body(sub=42), "invalid token"),  # PyJWT checks that sub is a string
        (lambda: body(sub="u" * 129), "token 'sub' must be a string of 1-128 characters"),
        (lambda: {"sub": "alice"}, "invalid token"),  # no exp
        (lambda: body(exp=time.time() + 300), "token 'exp' must be an integer below 2^53"),
        (lambda: body(exp=2**53), "token 'exp' must be an integer below 2^53"),
    ],
    ids=[
        "no-sub",
        "empty-sub",
        "number-sub",
        "long-sub",
        "no-exp",
        "float-exp",
        "huge-exp",
    ],
)
def test_sub_and_exp_are_required_and_checked(
    verifier: TokenVerifier, claims: Callable[[], dict[str, Any]], expected: str
) -> None:
    assert unauthorized(verifier.connection, hs(claims())).startswith(expected)


def test_a_user_id_of_128_characters_is_accepted(verifier: TokenVerifier) -> None:
    assert verifier.connection(hs(body(sub="u" * 128))).user == "u" * 128


@pytest.mark.parametrize(
    "token",
    [None, 42, b"a.b.c", "", "x" * 8193],
    ids=["none", "number", "bytes", "empty", "too-long"],
)
def test_a_token_must_be_a_string_of_bounded_length(verifier: TokenVerifier, token: Any) -> None:
    assert unauthorized(verifier.connection, token) == (
        "token must be a string of at most 8192 characters"
    )


def test_something_that_is_not_a_jwt_is_a_malformed_token(verifier: TokenVerifier) -> None:
    assert unauthorized(verifier.connection, "not-a-jwt").startswith("malformed token")


def test_audience_and_issuer_are_required_once_configured() -> None:
    verifier = TokenVerifier(
        Settings(jwt_secret=SECRET, jwt_audience="pushhub", jwt_issuer="https://auth.test")
    )
    aud, iss = "pushhub", "https://auth.test"

    assert verifier.connection(hs(body(aud=aud, iss=iss))).user == "alice"
    for claims in (
        body(aud="another", iss=iss),
        body(iss=iss),
        body(aud=aud, iss="https://evil.test"),
        body(aud=aud),
    ):
        assert unauthorized(verifier.connection, hs(claims)).startswith("invalid token")


def test_an_audience_claim_is_ignored_when_none_is_configured(verifier: TokenVerifier) -> None:
    assert verifier.connection(hs(body(aud="whatever"))).user == "alice"


# -- keys and algorithms -------------------------------------------------------------------


def test_a_token_signed_with_another_secret_is_refused(verifier: TokenVerifier) -> None:
    assert unauthorized(verifier.connection, hs(body(), OTHER_SECRET)).startswith("invalid token")


@pytest.mark.parametrize("algorithm", ["HS512", "none"])
def test_an_algorithm_outside_the_configured_ones_is_refused_by_name(
    verifier: TokenVerifier, algorithm: str
) -> None:
    token = jwt.encode(body(), SECRET if algorithm != "none" else "", algorithm=algorithm)

    assert unauthorized(verifier.connection, token) == (
        f"token algorithm {algorithm!r} is not allowed"
    )


def test_pinned_hmac_algorithms_are_the_ones_accepted() -> None:
    verifier = TokenVerifier(Settings(jwt_secret=SECRET, jwt_algorithms=("HS512",)))

    assert verifier.connection(hs(body(), algorithm="HS512")).user == "alice"
    assert "not allowed" in unauthorized(verifier.connection, hs(body()))


def test_an_rsa_public_key_verifies_rs256_and_refuses_other_keys_and_algorithms(
    keys: dict[str, Path],
) -> None:
    verifier = TokenVerifier(Settings(jwt_public_key=str(keys["rsa_pem"])))

    assert verifier.algorithms == ["RS256"]
    assert verifier.connection(signed(body(), RSA)).user == "alice"
    assert "not allowed" in unauthorized(verifier.connection, signed(body(), EC))
    assert "not allowed" in unauthorized(verifier.connection, hs(body()))


def test_an_ec_public_key_defaults_to_es256(keys: dict[str, Path]) -> None:
    verifier = TokenVerifier(Settings(jwt_public_key=str(keys["ec_pem"])))

    assert verifier.algorithms == ["ES256"]
    assert verifier.connection(signed(body(), EC)).user == "alice"


def test_an_ed25519_public_key_defaults_to_eddsa(tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = tmp_path / "ed25519.pem"
    pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    verifier = TokenVerifier(Settings(jwt_public_key=str(pem)))

    assert verifier.algorithms == ["EdDSA"]
    assert verifier.connection(jwt.encode(body(), private, algorithm="EdDSA")).user == "alice"


def test_a_secret_and_a_public_key_each_verify_only_their_own_family(
    keys: dict[str, Path],
) -> None:
    verifier = TokenVerifier(
        Settings(
            jwt_secret=SECRET,
            jwt_public_key=str(keys["rsa_pem"]),
            jwt_algorithms=("RS256", "HS256"),
        )
    )

    assert verifier.connection(signed(body(), RSA)).user == "alice"
    assert verifier.connection(hs(body())).user == "alice"
    # HS256 keyed with the public key's PEM (algorithm confusion): HS256 uses the secret.
    assert unauthorized(verifier.connection, hs256_keyed_with(body(), RSA.public_pem)).startswith(
        "invalid token"
    )


def test_a_jwks_finds_the_key_by_its_kid(keys: dict[str, Path]) -> None:
    verifier = TokenVerifier(Settings(jwt_jwks_file=str(keys["jwks"])))

    assert verifier.algorithms == ["RS256", "ES256"]
    assert verifier.connection(signed(body(), RSA, kid=RSA.kid)).user == "alice"
    assert verifier.connection(signed(body(sub="bob"), EC, kid=EC.kid)).user == "bob"
    assert unauthorized(verifier.connection, signed(body(), RSA, kid="unknown")) == (
        "token key id is not in the JWKS"
    )
    assert unauthorized(verifier.connection, signed(body(), RSA)) == (
        "token has no key id to look up in the JWKS"
    )
    # An RS256 token whose kid names the EC key: the key does not fit the algorithm.
    assert unauthorized(verifier.connection, signed(body(), RSA, kid=EC.kid)).startswith(
        "invalid token"
    )


def test_with_a_jwks_and_a_public_key_a_token_without_kid_uses_the_public_key(
    keys: dict[str, Path],
) -> None:
    verifier = TokenVerifier(
        Settings(jwt_public_key=str(keys["ec_pem"]), jwt_jwks_file=str(keys["jwks"]))
    )

    assert verifier.algorithms == ["ES256", "RS256"]
    assert verifier.connection(signed(body(), EC)).user == "alice"
    # A kid is looked up in the JWKS only: an unknown one does not fall back.
    assert unauthorized(verifier.connection, signed(body(), EC, kid="unknown")) == (
        "token key id is not in the JWKS"
    )


# -- configuration errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        (Settings(jwt_algorithms=("HS256",)), "jwt_algorithms"),
        (Settings(jwt_secret=SECRET, jwt_algorithms=("RS256",)), "jwt_algorithms"),
        (Settings(jwt_secret=SECRET, jwt_algorithms=("none",)), "jwt_algorithms"),
        (Settings(jwt_secret=SECRET, jwt_algorithms=("HS1024",)), "jwt_algorithms"),
        (Settings(jwt_public_key="/nonexistent/key.pem"), "jwt_public_key"),
        (Settings(jwt_jwks_file="/nonexistent/jwks.json"), "jwt_jwks_file"),
    ],
    ids=["hmac-without-secret", "rsa-without-key", "none", "unknown", "no-pem", "no-jwks"],
)
def test_a_configuration_that_cannot_verify_stops_start_up_naming_the_key(
    settings: Settings, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        TokenVerifier(settings)

    assert caught.value.key == key


@pytest.mark.parametrize("text", ["not json", '{"keys": "no"}', '{"keys": [{"kty": "nope"}]}'])
def test_a_file_that_is_not_a_jwks_stops_start_up(tmp_path: Path, text: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(text)

    with pytest.raises(ConfigError) as caught:
        TokenVerifier(Settings(jwt_jwks_file=str(path)))

    assert (caught.value.key, caught.value.expected.startswith("a JWKS")) == (
        "jwt_jwks_file",
        True,
    )


def test_a_file_that_is_not_a_pem_public_key_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")

    with pytest.raises(ConfigError) as caught:
        TokenVerifier(Settings(jwt_public_key=str(path)))

    assert caught.value.key == "jwt_public_key"
    assert caught.value.expected.startswith("a PEM public key")


# -- subscription tokens -------------------------------------------------------------------


def test_a_subscription_token_for_this_user_and_channel_gives_its_expiry(
    verifier: TokenVerifier,
) -> None:
    claims = body(channel="private:1")

    assert verifier.subscription(hs(claims), "alice", "private:1") == claims["exp"]


@pytest.mark.parametrize(
    ("claims", "user", "expected"),
    [
        (lambda: body(channel="private:2"), "alice", "subscription token is for another channel"),
        (lambda: body(channel="private:1"), "bob", "subscription token is for another user"),
        (lambda: body(channel="private:1"), None, "subscription token is for another user"),
        (lambda: body(), "alice", "invalid token"),  # no channel claim: a connection token
    ],
    ids=["other-channel", "other-user", "anonymous", "connection-token"],
)
def test_a_subscription_token_grants_one_channel_to_one_user(
    verifier: TokenVerifier, claims: Callable[[], dict[str, Any]], user: str | None, expected: str
) -> None:
    token = hs(claims())

    assert unauthorized(verifier.subscription, token, user, "private:1").startswith(expected)


def test_an_expired_subscription_token_is_refused_as_expired(verifier: TokenVerifier) -> None:
    token = hs(body(ttl=-60, channel="private:1"))

    error = refusal(verifier.subscription, token, "alice", "private:1")

    assert error.close_code == CloseCode.TOKEN_EXPIRED


def test_an_auth_error_carries_its_request_id_and_maps_its_close_code() -> None:
    assert AuthError("x", CloseCode.TOKEN_EXPIRED, 7).code == ErrorCode.TOKEN_EXPIRED
    assert AuthError("x", CloseCode.TOO_MANY_CONNECTIONS).code == ErrorCode.TOO_MANY_CONNECTIONS
    error = AuthError("x", CloseCode.UNAUTHORIZED, 3)
    assert (error.code, error.request_id, error.close_code) == (ErrorCode.UNAUTHORIZED, 3, 4501)


# -- enforcing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "enforced"),
    [
        (Settings(), False),
        (Settings(jwt_secret=SECRET), True),
        (Settings(jwt_public_key="/any/key.pem"), True),
        (Settings(jwt_jwks_file="/any/jwks.json"), True),
        (Settings(jwt_audience="pushhub", jwt_issuer="https://auth.test"), False),
    ],
    ids=["nothing", "secret", "public-key", "jwks", "audience-only"],
)
def test_any_configured_key_turns_enforcement_on(settings: Settings, enforced: bool) -> None:
    assert enforcing(settings) is enforced


# -- the subscribe rule --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "owner"),
    [
        ("notifications#42", "42"),
        ("#42", "42"),
        ("notifications#", None),
        ("notifications", None),
        ("a#b#c", None),
    ],
)
def test_a_user_limited_channel_belongs_to_what_follows_its_hash(
    channel: str, owner: str | None
) -> None:
    assert channel_owner(channel) == owner


GRANTED = ChannelOptions()
AUTHENTICATED = ChannelOptions(subscribe="authenticated")
PUBLIC = ChannelOptions(subscribe="public")


@pytest.mark.parametrize(
    ("user", "granted", "channel", "options", "token_ok", "allowed"),
    [
        # A user-limited channel admits its owner only, whatever else is granted.
        ("42", (), "notifications#42", GRANTED, False, True),
        ("43", ("*",), "notifications#42", GRANTED, True, False),
        (None, (), "notifications#42", PUBLIC, False, False),
        # public: anyone, anonymous too.
        (None, (), "lobby", PUBLIC, False, True),
        # authenticated: any user.
        ("alice", (), "room:1", AUTHENTICATED, False, True),
        (None, (), "room:1", AUTHENTICATED, False, False),
        # granted (the default): a matching pattern, or a subscription token.
        ("alice", ("room:*",), "room:1", GRANTED, False, True),
        ("alice", ("room:?",), "room:12", GRANTED, False, False),
        ("alice", ("Room:*",), "room:1", GRANTED, False, False),  # case-sensitive
        ("alice", ("news", "room:*"), "room:1", GRANTED, False, True),
        ("alice", (), "room:1", GRANTED, False, False),
        ("alice", (), "room:1", GRANTED, True, True),
        (None, ("*",), "room:1", GRANTED, True, False),
    ],
)
def test_may_subscribe_follows_the_documented_rules(
    user: str | None,
    granted: tuple[str, ...],
    channel: str,
    options: ChannelOptions,
    token_ok: bool,
    allowed: bool,
) -> None:
    assert may_subscribe(user, granted, channel, options, token_ok) is allowed
