"""Tokens: signature, algorithm, claims, expiry, creator secrets, the secret file."""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from pathlib import Path

import jwt
import pytest

from locshare._auth import TokenAuthority, load_or_create_secret
from locshare.errors import ConfigError, Unauthorized

SECRET = "k" * 64
NOW = 1_800_000_000.0


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_participant_round_trip() -> None:
    auth = TokenAuthority(SECRET)
    sid, uid = uuid.uuid4(), uuid.uuid4()
    claims = auth.verify(auth.participant_token(sid, uid, NOW + 60, NOW), NOW)
    assert (claims.session_id, claims.subject, claims.role, claims.expires_at) == (
        sid,
        uid,
        "participant",
        NOW + 60,
    )


def test_creator_token_binds_to_the_stored_hash() -> None:
    auth = TokenAuthority(SECRET)
    sid = uuid.uuid4()
    token, stored = auth.creator_token(sid, NOW + 60, NOW)
    claims = auth.verify(token, NOW)
    assert claims.role == "creator" and auth.creator_matches(claims, stored)
    other_token, _ = auth.creator_token(sid, NOW + 60, NOW)
    assert not auth.creator_matches(auth.verify(other_token, NOW), stored)


@pytest.mark.parametrize(
    "case",
    [
        "forged",
        "expired",
        "alg_none",
        "hs512",
        "role",
        "sid",
        "missing",
        "garbage",
        "huge",
        "empty",
    ],
)
def test_refusals(case: str) -> None:
    auth = TokenAuthority(SECRET)
    sid, uid = str(uuid.uuid4()), str(uuid.uuid4())
    good = {"sid": sid, "sub": uid, "role": "participant", "exp": int(NOW + 60)}
    token = {
        "forged": lambda: jwt.encode(good, "z" * 64, algorithm="HS256"),
        "expired": lambda: jwt.encode({**good, "exp": int(NOW - 1)}, SECRET, algorithm="HS256"),
        "alg_none": lambda: b64({"alg": "none", "typ": "JWT"}) + "." + b64(good) + ".",
        "hs512": lambda: jwt.encode(good, SECRET, algorithm="HS512"),
        "role": lambda: jwt.encode({**good, "role": "admin"}, SECRET, algorithm="HS256"),
        "sid": lambda: jwt.encode({**good, "sid": "not-a-uuid"}, SECRET, algorithm="HS256"),
        "missing": lambda: jwt.encode(
            {"sid": sid, "exp": int(NOW + 60)}, SECRET, algorithm="HS256"
        ),
        "garbage": lambda: "a.b.c",
        "huge": lambda: "a" * 5000,
        "empty": lambda: "",
    }[case]()
    with pytest.raises(Unauthorized):
        auth.verify(token, NOW)


def test_swapped_role_creator_without_secret() -> None:
    auth = TokenAuthority(SECRET)
    token = jwt.encode(
        {
            "sid": str(uuid.uuid4()),
            "sub": str(uuid.uuid4()),
            "role": "creator",
            "exp": int(NOW + 60),
        },
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(Unauthorized):
        auth.verify(token, NOW)


def test_short_secret_refused() -> None:
    with pytest.raises(ConfigError):
        TokenAuthority("short")


def test_secret_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_or_create_secret("", tmp_path)
    assert len(first) >= 32
    path = tmp_path / "jwt_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret("", tmp_path) == first
    os.chmod(path, 0o644)
    assert load_or_create_secret("", tmp_path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret("c" * 40, tmp_path) == "c" * 40
    path.write_text("tiny\n")
    with pytest.raises(ConfigError):
        load_or_create_secret("", tmp_path)
