"""Optional password gate for a team deployment: a salted scrypt hash, never the password itself.

The hash comes from $RERANKER_STUDIO_PASSWORD_HASH or `<workspace>/auth.json` (written by
`reranker-studio set-password`). With neither, the app is open, which is fine on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets

from lib.workspace import Workspace

ENV_HASH = "RERANKER_STUDIO_PASSWORD_HASH"
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("the password must have at least 8 characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
            dklen=len(base64.b64decode(digest)),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def configured_hash(ws: Workspace) -> str | None:
    if os.environ.get(ENV_HASH):
        return os.environ[ENV_HASH]
    path = ws.root / "auth.json"
    if path.is_file():
        return json.loads(path.read_text()).get("password_hash")
    return None


def save_password(ws: Workspace, password: str | None) -> None:
    """Store a new hash (or remove the gate with None); the file is readable by its owner only."""
    path = ws.root / "auth.json"
    if password is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"password_hash": hash_password(password)}))
    tmp.chmod(0o600)
    tmp.replace(path)
