"""Key material and JWTs for the abuse suite, made with PyJWT and cryptography.

Every token and secret made here is remembered in ``ISSUED``, so the log test can prove
that none of them reached a node's log. Forgeries that PyJWT refuses to produce (``alg:
none``, HS256 keyed with an RSA public key) are assembled by hand from their parts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

#: The HS256 secret nodes are configured with, and one they are not.
SECRET = "security-suite-secret-0123456789abcdef"
OTHER_SECRET = "security-suite-other-secret-0123456789"
#: The audience and issuer the token nodes require.
AUDIENCE = "pushhub-abuse-suite"
ISSUER = "https://auth.example.com"

#: Every token and secret this module made: none may ever appear in a node's log.
ISSUED: list[str] = [SECRET, OTHER_SECRET]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _remember(token: str) -> str:
    ISSUED.append(token)
    return token


@dataclass(frozen=True)
class KeyPair:
    """A private key that signs, and its public key as PEM and as a JWK."""

    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    algorithm: str
    kid: str

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_jwk(self) -> dict[str, Any]:
        if self.algorithm.startswith("RS"):
            jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.public()))
        else:
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.public()))
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def public(self) -> Any:
        return self.private.public_key()


def rsa_pair(kid: str) -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", kid)


def ec_pair(kid: str) -> KeyPair:
    return KeyPair(ec.generate_private_key(ec.SECP256R1()), "ES256", kid)


#: The keys nodes trust, and look-alikes they do not.
RSA = rsa_pair("rsa-1")
EC = ec_pair("ec-1")
OTHER_RSA = rsa_pair("rsa-1")  # the same kid, another key: a forgery
OTHER_EC = ec_pair("ec-1")


def write_key_files(directory: Path) -> dict[str, Path]:
    """The trusted keys as files a node reads: two PEMs and one JWKS with both."""
    paths = {
        "rsa_pem": directory / "rsa.pem",
        "ec_pem": directory / "ec.pem",
        "jwks": directory / "jwks.json",
    }
    paths["rsa_pem"].write_bytes(RSA.public_pem)
    paths["ec_pem"].write_bytes(EC.public_pem)
    jwks = {"keys": [RSA.public_jwk(), EC.public_jwk()]}
    paths["jwks"].write_text(json.dumps(jwks))
    return paths


def claims(sub: Any = "alice", ttl: float = 300, **extra: Any) -> dict[str, Any]:
    """Connection claims the token nodes accept: sub, exp, aud and iss. ``extra`` adds
    or replaces claims; a value of None removes the claim."""
    body: dict[str, Any] = {
        "sub": sub,
        "exp": int(time.time() + ttl),
        "aud": AUDIENCE,
        "iss": ISSUER,
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def hs256(body: dict[str, Any], secret: str = SECRET, headers: dict[str, Any] | None = None) -> str:
    return _remember(jwt.encode(body, secret, algorithm="HS256", headers=headers))


def signed(body: dict[str, Any], pair: KeyPair, kid: str | None = None) -> str:
    """``body`` signed with ``pair`` (RS256 or ES256), with a ``kid`` header if given."""
    headers = {"kid": kid} if kid is not None else None
    return _remember(jwt.encode(body, pair.private, algorithm=pair.algorithm, headers=headers))


def _assemble(header: dict[str, Any], body: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(body).encode())


def alg_none(body: dict[str, Any]) -> str:
    """An unsigned token (``alg: none``, empty signature)."""
    return _remember(_assemble({"alg": "none", "typ": "JWT"}, body) + ".")


def hs256_keyed_with(body: dict[str, Any], key: bytes) -> str:
    """HS256 over ``body`` with ``key`` as the HMAC secret: the algorithm-confusion
    forgery when ``key`` is the server's RSA public key PEM (PyJWT refuses to make it)."""
    signing_input = _assemble({"alg": "HS256", "typ": "JWT"}, body)
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return _remember(signing_input + "." + _b64(mac))


def with_header(header: dict[str, Any], body: dict[str, Any], pair: KeyPair) -> str:
    """``body`` signed with ``pair`` under any header at all, even one PyJWT would not
    write (a ``kid`` that is not a string, an ``alg`` that is a list)."""
    signing_input = _assemble(header, body)
    algorithm = jwt.algorithms.get_default_algorithms()[pair.algorithm]
    signature = algorithm.sign(signing_input.encode(), algorithm.prepare_key(pair.private))
    return _remember(signing_input + "." + _b64(signature))


def tampered(token: str, **changes: Any) -> str:
    """``token`` with its payload changed and its original signature kept."""
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    return _remember(header + "." + _b64(json.dumps(body).encode()) + "." + signature)
