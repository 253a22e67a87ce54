"""Connection tokens under attack: every forgery is refused with its documented code and
close code, and nothing it asked for reaches Redis.

A refused token answers ``{"type":"error","code":"unauthorized"}`` and closes with 4501
(do not reconnect), or ``token_expired`` and 4002 (get a fresh token, then reconnect).
Each refused connection also sends a ``subscribe`` for a channel its token grants, so a
token that slipped through would show up in ``PUBSUB CHANNELS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.security.harness import (
    Nodes,
    authenticate,
    connect_as,
    is_alive,
    open_client,
    pubsub_channels,
    redis_publish,
    until_closed,
)
from tests.security.tokens import (
    AUDIENCE,
    EC,
    ISSUER,
    OTHER_EC,
    OTHER_RSA,
    OTHER_SECRET,
    RSA,
    SECRET,
    alg_none,
    claims,
    hs256,
    hs256_keyed_with,
    signed,
    tampered,
    with_header,
)
from tests.support import Client, PushhubNode, RedisServer

UNAUTHORIZED = ("unauthorized", 4501)
EXPIRED = ("token_expired", 4002)

COMMON = {"PUSHHUB_JWT_AUDIENCE": AUDIENCE, "PUSHHUB_JWT_ISSUER": ISSUER}
HS_ENV = {
    **COMMON,
    "PUSHHUB_JWT_SECRET": SECRET,
    "PUSHHUB_AUTH_TIMEOUT": "1",
    "PUSHHUB_MAX_CONNECTIONS_PER_USER": "2",
}


@dataclass(frozen=True)
class TokenNodes:
    hs: PushhubNode  # HS256 with a secret, audience and issuer required
    hs_b: PushhubNode  # a second node like it, for limits across nodes
    rsa_pinned: PushhubNode  # a secret AND an RSA public key, algorithms pinned to RS256
    rsa_only: PushhubNode  # an RSA public key only, algorithms pinned to RS256
    rsa_or_hs: PushhubNode  # a secret and an RSA public key, RS256 and HS256 both allowed
    ec: PushhubNode  # an EC public key, default algorithms
    jwks: PushhubNode  # a JWKS with an RSA and an EC key


@pytest.fixture(scope="module")
def token_nodes(nodes: Nodes, key_files: dict[str, Path]) -> TokenNodes:
    rsa, ec, jwks = (str(key_files[k]) for k in ("rsa_pem", "ec_pem", "jwks"))
    started = nodes.start(
        HS_ENV,
        HS_ENV,
        {
            **COMMON,
            "PUSHHUB_JWT_SECRET": SECRET,
            "PUSHHUB_JWT_PUBLIC_KEY": rsa,
            "PUSHHUB_JWT_ALGORITHMS": "RS256",
        },
        {**COMMON, "PUSHHUB_JWT_PUBLIC_KEY": rsa, "PUSHHUB_JWT_ALGORITHMS": "RS256"},
        {
            **COMMON,
            "PUSHHUB_JWT_SECRET": SECRET,
            "PUSHHUB_JWT_PUBLIC_KEY": rsa,
            "PUSHHUB_JWT_ALGORITHMS": "RS256,HS256",
        },
        {**COMMON, "PUSHHUB_JWT_PUBLIC_KEY": ec},
        {**COMMON, "PUSHHUB_JWT_JWKS_FILE": jwks},
    )
    return TokenNodes(*started)


#: A token maker: given the channels the token grants, the token.
Maker = Callable[[list[str]], str]


def _hs(**extra: Any) -> Maker:
    return lambda grant: hs256(claims("alice", **{"channels": grant, **extra}))


REFUSED_ON_HS: dict[str, tuple[Maker, tuple[str, int]]] = {
    "payload-changed-after-signing": (
        lambda grant: tampered(hs256(claims("alice", channels=grant)), sub="root"),
        UNAUTHORIZED,
    ),
    "signature-stripped": (
        lambda grant: hs256(claims("alice", channels=grant)).rsplit(".", 1)[0] + ".",
        UNAUTHORIZED,
    ),
    "signed-with-another-secret": (
        lambda grant: hs256(claims("alice", channels=grant), OTHER_SECRET),
        UNAUTHORIZED,
    ),
    "expired": (_hs(exp=int(time.time()) - 3600), EXPIRED),
    "nbf-in-the-future": (_hs(nbf=int(time.time()) + 3600), UNAUTHORIZED),
    "missing-exp": (_hs(exp=None), UNAUTHORIZED),
    "exp-not-an-integer": (_hs(exp=str(int(time.time()) + 3600)), UNAUTHORIZED),
    "missing-sub": (lambda grant: hs256(claims(None, channels=grant)), UNAUTHORIZED),
    "empty-sub": (lambda grant: hs256(claims("", channels=grant)), UNAUTHORIZED),
    "sub-not-a-string": (lambda grant: hs256(claims(42, channels=grant)), UNAUTHORIZED),
    "alg-none": (lambda grant: alg_none(claims("alice", channels=grant)), UNAUTHORIZED),
    "wrong-audience": (_hs(aud="another-service"), UNAUTHORIZED),
    "missing-audience": (_hs(aud=None), UNAUTHORIZED),
    "wrong-issuer": (_hs(iss="https://evil.example"), UNAUTHORIZED),
    "unknown-crit-header": (
        lambda grant: hs256(
            claims("alice", channels=grant),
            headers={"crit": ["urn:example:must-understand"], "urn:example:must-understand": 1},
        ),
        UNAUTHORIZED,
    ),
    "rs256-on-an-hs256-node": (
        lambda grant: signed(claims("alice", channels=grant), RSA),
        UNAUTHORIZED,
    ),
    "not-a-jwt": (lambda grant: "not.a.jwt", UNAUTHORIZED),
    "channels-not-patterns": (
        lambda grant: hs256(claims("alice", channels=[*grant, "a b", "x{y}"])),
        UNAUTHORIZED,
    ),
}


async def _assert_refused(
    client: Client, redis: RedisServer, channel: str, expected: tuple[str, int], rid: int | None
) -> None:
    # The subscribe a successful connect would have allowed; it must never take effect.
    with contextlib.suppress(ConnectionClosed):
        await client.send({"type": "subscribe", "channel": channel, "id": 99})
    frames, close_code = await until_closed(client)
    assert frames, f"closed with {close_code} and no error frame explaining why"
    assert frames[0]["type"] == "error", frames
    assert (frames[0]["code"], close_code) == expected, frames
    assert frames[0]["id"] == rid
    assert all(f["type"] == "error" for f in frames), frames
    assert channel not in pubsub_channels(redis)
    assert redis_publish(redis, channel, '"leak"') == 0


async def _refused(
    node: PushhubNode,
    redis: RedisServer,
    token: str,
    channel: str,
    expected: tuple[str, int],
    transport: str,
) -> None:
    if transport == "query":
        client = await open_client(node, token=token)
        await _assert_refused(client, redis, channel, expected, None)
    else:
        client = await open_client(node)
        await client.send({"type": "connect", "token": token, "id": 1})
        await _assert_refused(client, redis, channel, expected, 1)


@pytest.mark.parametrize("transport", ["frame", "query"])
@pytest.mark.parametrize("case", sorted(REFUSED_ON_HS))
async def test_bad_token_is_refused_with_its_code_and_nothing_is_subscribed(
    token_nodes: TokenNodes, redis_server: RedisServer, case: str, transport: str
) -> None:
    make, expected = REFUSED_ON_HS[case]
    channel = f"tok.{case}.{transport}"
    await _refused(token_nodes.hs, redis_server, make([channel]), channel, expected, transport)


#: Algorithm confusion and foreign keys on the public-key nodes: (node, token maker).
CONFUSION: dict[str, tuple[str, Maker]] = {
    # HS256 with the RSA public key PEM as HMAC secret: the classic confusion forgery.
    "hs256-keyed-with-rsa-pem-on-rsa-pinned": (
        "rsa_pinned",
        lambda grant: hs256_keyed_with(claims("alice", channels=grant), RSA.public_pem),
    ),
    "hs256-keyed-with-rsa-pem-on-rsa-only": (
        "rsa_only",
        lambda grant: hs256_keyed_with(claims("alice", channels=grant), RSA.public_pem),
    ),
    "hs256-keyed-with-stripped-rsa-pem-on-rsa-only": (
        "rsa_only",
        lambda grant: hs256_keyed_with(claims("alice", channels=grant), RSA.public_pem.strip()),
    ),
    # HS256 is allowed here, but it is checked against the secret, never the PEM.
    "hs256-keyed-with-rsa-pem-where-hs256-is-allowed": (
        "rsa_or_hs",
        lambda grant: hs256_keyed_with(claims("alice", channels=grant), RSA.public_pem),
    ),
    "hs256-with-the-real-secret-where-only-rs256-is-pinned": (
        "rsa_pinned",
        lambda grant: hs256(claims("alice", channels=grant)),
    ),
    "rs256-signed-by-another-key": (
        "rsa_only",
        lambda grant: signed(claims("alice", channels=grant), OTHER_RSA),
    ),
    "es256-where-only-rs256-is-pinned": (
        "rsa_only",
        lambda grant: signed(claims("alice", channels=grant), EC),
    ),
    "es256-signed-by-another-key": (
        "ec",
        lambda grant: signed(claims("alice", channels=grant), OTHER_EC),
    ),
    # The EC node allows RS256 by default, but its key cannot verify an RSA signature.
    "rs256-on-a-node-whose-key-is-ec": (
        "ec",
        lambda grant: signed(claims("alice", channels=grant), RSA),
    ),
    "alg-none-on-jwks": (
        "jwks",
        lambda grant: alg_none(claims("alice", channels=grant)),
    ),
    "hs256-keyed-with-rsa-pem-on-jwks": (
        "jwks",
        lambda grant: hs256_keyed_with(claims("alice", channels=grant), RSA.public_pem),
    ),
    "jwks-kid-of-the-right-key-signed-by-another": (
        "jwks",
        lambda grant: signed(claims("alice", channels=grant), OTHER_RSA, kid="rsa-1"),
    ),
    "jwks-unknown-kid": (
        "jwks",
        lambda grant: signed(claims("alice", channels=grant), RSA, kid="rsa-9"),
    ),
    "jwks-no-kid": (
        "jwks",
        lambda grant: signed(claims("alice", channels=grant), RSA),
    ),
    "jwks-es256-with-the-kid-of-the-rsa-key": (
        "jwks",
        lambda grant: signed(claims("alice", channels=grant), EC, kid="rsa-1"),
    ),
    "jwks-kid-not-a-string": (
        "jwks",
        lambda grant: with_header(
            {"alg": "RS256", "kid": ["rsa-1"]}, claims("alice", channels=grant), RSA
        ),
    ),
    "jwks-embedded-jwk-of-the-attacker": (
        "jwks",
        lambda grant: with_header(
            {"alg": "RS256", "kid": "rsa-1", "jwk": OTHER_RSA.public_jwk()},
            claims("alice", channels=grant),
            OTHER_RSA,
        ),
    ),
}


@pytest.mark.parametrize("transport", ["frame", "query"])
@pytest.mark.parametrize("case", sorted(CONFUSION))
async def test_forged_or_foreign_key_token_is_refused_as_unauthorized(
    token_nodes: TokenNodes, redis_server: RedisServer, case: str, transport: str
) -> None:
    node_name, make = CONFUSION[case]
    node: PushhubNode = getattr(token_nodes, node_name)
    channel = f"alg.{case}.{transport}"
    await _refused(node, redis_server, make([channel]), channel, UNAUTHORIZED, transport)


#: Valid tokens and the node that must accept them.
ACCEPTED: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "hs256-secret": ("hs", hs256),
    "rs256-public-key-pem": ("rsa_only", lambda body: signed(body, RSA)),
    "rs256-pem-beside-a-secret": ("rsa_pinned", lambda body: signed(body, RSA)),
    "hs256-secret-beside-a-pem": ("rsa_or_hs", hs256),
    "es256-public-key-pem": ("ec", lambda body: signed(body, EC)),
    "rs256-jwks": ("jwks", lambda body: signed(body, RSA, kid="rsa-1")),
    "es256-jwks": ("jwks", lambda body: signed(body, EC, kid="ec-1")),
}


@pytest.mark.parametrize("transport", ["frame", "query"])
@pytest.mark.parametrize("case", sorted(ACCEPTED))
async def test_valid_token_is_accepted_and_its_granted_channel_receives(
    token_nodes: TokenNodes, redis_server: RedisServer, case: str, transport: str
) -> None:
    node_name, make = ACCEPTED[case]
    node: PushhubNode = getattr(token_nodes, node_name)
    user, channel = f"user-{case}-{transport}", f"ok.{case}.{transport}"
    body = claims(user, channels=[f"ok.{case}.*"])
    token = make(body)

    if transport == "query":
        client = await open_client(node, token=token)
        connected = await client.recv_type("connected")
    else:
        client = await open_client(node)
        connected = await authenticate(client, token)
    assert (connected["user"], connected["expires_at"]) == (user, body["exp"])
    await client.subscribe(channel)
    assert redis_publish(redis_server, channel, '{"n":1}') == 1

    assert await client.recv() == {"type": "message", "channel": channel, "data": {"n": 1}}


@pytest.mark.parametrize(
    "frame",
    [{"type": "connect"}, {"type": "connect", "user": "alice"}, {"type": "ping"}],
    ids=["connect-without-token", "connect-as-a-declared-user", "ping-before-connect"],
)
async def test_socket_that_does_not_present_a_token_is_refused(
    token_nodes: TokenNodes, redis_server: RedisServer, frame: dict[str, Any]
) -> None:
    client = await open_client(token_nodes.hs)
    await client.send({**frame, "id": 7})
    channel = f"notoken.{frame['type']}.{'user' in frame}"
    await _assert_refused(client, redis_server, channel, UNAUTHORIZED, 7)


async def test_silent_socket_is_closed_at_the_auth_deadline(token_nodes: TokenNodes) -> None:
    client = await open_client(token_nodes.hs)
    started = time.monotonic()

    frames, close_code = await until_closed(client, timeout=5)

    assert close_code == 4003
    assert 0.5 <= time.monotonic() - started < 4  # PUSHHUB_AUTH_TIMEOUT=1
    assert not any(f["type"] in ("connected", "message") for f in frames)


async def test_token_expiry_closes_with_4002_unless_refreshed(
    token_nodes: TokenNodes, redis_server: RedisServer
) -> None:
    channel = "expiry.watch"
    lapsing = await connect_as(token_nodes.hs, hs256(claims("expiry-a", ttl=2, channels=[channel])))
    refreshed = await connect_as(
        token_nodes.hs, hs256(claims("expiry-b", ttl=2, channels=[channel]))
    )
    await lapsing.subscribe(channel)
    await refreshed.subscribe(channel)
    fresh = claims("expiry-b", ttl=120, channels=[channel])

    reply = await refreshed.request({"type": "refresh", "token": hs256(fresh)})
    frames, close_code = await until_closed(lapsing, timeout=12)

    assert reply == {"type": "refreshed", "expires_at": fresh["exp"], "id": reply["id"]}
    assert close_code == 4002
    assert [(f["type"], f.get("code")) for f in frames] == [("error", "token_expired")]
    # The refreshed connection outlived the first token's expiry and still receives.
    assert await is_alive(refreshed)
    assert redis_publish(redis_server, channel, "1") == 1
    assert (await refreshed.recv())["data"] == 1


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("another-user", UNAUTHORIZED),
        ("expired", EXPIRED),
        ("another-secret", UNAUTHORIZED),
        ("alg-none", UNAUTHORIZED),
    ],
)
async def test_refresh_with_a_bad_token_is_refused_and_closes(
    token_nodes: TokenNodes, case: str, expected: tuple[str, int]
) -> None:
    user = f"refresher-{case}"
    client = await connect_as(token_nodes.hs, hs256(claims(user)))
    token = {
        "another-user": lambda: hs256(claims("mallory", ttl=3600)),
        "expired": lambda: hs256(claims(user, exp=int(time.time()) - 3600)),
        "another-secret": lambda: hs256(claims(user, ttl=3600), OTHER_SECRET),
        "alg-none": lambda: alg_none(claims(user, ttl=3600)),
    }[case]()

    await client.send({"type": "refresh", "token": token, "id": 5})
    frames, close_code = await until_closed(client)

    assert (frames[0]["type"], frames[0]["code"], frames[0]["id"]) == ("error", expected[0], 5)
    assert close_code == expected[1]


async def test_connections_per_user_are_capped_across_nodes(
    token_nodes: TokenNodes,
) -> None:
    token = hs256(claims("capped-user", channels=["cap.*"]))
    first = await connect_as(token_nodes.hs, token)
    await connect_as(token_nodes.hs, token)

    third = await open_client(token_nodes.hs_b)
    await third.send({"type": "connect", "token": token, "id": 3})
    frames, close_code = await until_closed(third)
    by_query = await open_client(token_nodes.hs_b, token=token)
    _, query_close_code = await until_closed(by_query)
    other_user = await connect_as(token_nodes.hs_b, hs256(claims("uncapped-user")))

    assert close_code == 4004
    assert query_close_code == 4004
    assert (frames[0]["type"], frames[0]["id"]) == ("error", 3)
    assert not any(f["type"] == "connected" for f in frames)
    assert await is_alive(other_user)  # another user on the same node is unaffected

    # Once a connection goes, its slot is free again, on any node.
    await first.close()
    deadline = time.monotonic() + 5
    while True:
        retry = await open_client(token_nodes.hs_b)
        reply = await retry.request({"type": "connect", "token": token})
        if reply["type"] == "connected" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)  # the other node releases the slot when it sees the close
    assert reply["type"] == "connected", reply
