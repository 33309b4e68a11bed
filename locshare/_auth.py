"""Tokens: HS256 JWTs via pyjwt.

Claims: ``sid`` (session id), ``sub`` (participant id, or the creator id), ``role``
(``participant`` | ``creator``), ``exp`` (the session's expiry), ``iat``.  A creator
token also carries ``cs``, a 128-bit random secret whose SHA-256 is stored in
``sessions.creator_secret_hash``; so a creator token is only valid for the session that
stored its hash, even to someone holding the signing key.

Signature and expiry are checked here (sans-io: ``now`` is an argument).  Revocation
(a participant who left, a session that ended) needs state and is checked by the
caller against the database or the live session.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jwt

from .errors import ConfigError, Unauthorized

ALGORITHM = "HS256"
MAX_TOKEN_CHARS = 2048
Role = Literal["participant", "creator"]
_ROLES = ("participant", "creator")


@dataclass(frozen=True, slots=True)
class Claims:
    session_id: uuid.UUID
    subject: uuid.UUID
    role: Role
    expires_at: float
    creator_secret: str | None = None


def hash_creator_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class TokenAuthority:
    """Issues and verifies tokens with one signing secret."""

    def __init__(self, secret: str | bytes) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < 32:
            raise ConfigError("the JWT secret must be at least 32 bytes")
        self._key = key

    def participant_token(
        self, session_id: uuid.UUID, user_id: uuid.UUID, expires_at: float, now: float
    ) -> str:
        return self._encode(session_id, user_id, "participant", expires_at, now, None)

    def creator_token(
        self, session_id: uuid.UUID, expires_at: float, now: float
    ) -> tuple[str, bytes]:
        """A new creator token and the hash of its secret (to store with the session)."""
        secret = secrets.token_urlsafe(16)
        token = self._encode(session_id, uuid.uuid4(), "creator", expires_at, now, secret)
        return token, hash_creator_secret(secret)

    def _encode(
        self,
        session_id: uuid.UUID,
        subject: uuid.UUID,
        role: Role,
        expires_at: float,
        now: float,
        creator_secret: str | None,
    ) -> str:
        payload: dict[str, object] = {
            "sid": str(session_id),
            "sub": str(subject),
            "role": role,
            "exp": int(expires_at),
            "iat": int(now),
        }
        if creator_secret is not None:
            payload["cs"] = creator_secret
        return jwt.encode(payload, self._key, algorithm=ALGORITHM)

    def verify(self, token: str, now: float) -> Claims:
        """Check signature, algorithm, shape and expiry; raise :class:`Unauthorized`."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("missing or malformed token")
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                options={
                    "require": ["sid", "sub", "role", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        try:
            session_id = uuid.UUID(str(payload["sid"]))
            subject = uuid.UUID(str(payload["sub"]))
            role = payload["role"]
            exp = payload["exp"]
            if role not in _ROLES or not isinstance(exp, int) or isinstance(exp, bool):
                raise ValueError
            creator_secret = payload.get("cs")
            if role == "creator" and not isinstance(creator_secret, str):
                raise ValueError
        except (ValueError, TypeError, AttributeError):
            raise Unauthorized("invalid token") from None
        if exp <= now:
            raise Unauthorized("token expired")
        return Claims(
            session_id, subject, role, float(exp), creator_secret if role == "creator" else None
        )

    @staticmethod
    def creator_matches(claims: Claims, stored_hash: bytes) -> bool:
        if claims.role != "creator" or claims.creator_secret is None:
            return False
        return hmac.compare_digest(hash_creator_secret(claims.creator_secret), stored_hash)


def load_or_create_secret(configured: str, data_dir: str | Path) -> str:
    """The configured secret, else the one kept in ``data_dir/jwt_secret`` (created 0600)."""
    if configured:
        return configured
    directory = Path(data_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "jwt_secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text(encoding="ascii").strip()
        if len(secret) < 32:
            raise ConfigError(f"{path} holds a JWT secret shorter than 32 characters") from None
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return secret
    secret = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret + "\n")
    return secret
