"""Internal credentials derived from the cluster secret.

Every pinhole process of a cluster shares one secret (a file, or an environment variable).
Services never send the secret itself: they send a credential derived from it for one
purpose, so that a leaked store-write credential grants nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Final

SECRET_ENV: Final = "PINHOLE_CLUSTER_SECRET"
SECRET_FILE_NAME: Final = "cluster.secret"
SECRET_BYTES_MIN: Final = 16

# Purposes (part of the derivation: changing one invalidates its credentials).
STORE_INTERNAL: Final = "pinhole/store/internal/v1"

AUTH_SCHEME: Final = "Pinhole-Internal"


class SecretError(ValueError):
    pass


def derive(secret: bytes, purpose: str) -> str:
    """The credential for `purpose`: hex HMAC-SHA256 of the purpose under the secret."""
    return hmac.new(secret, purpose.encode(), hashlib.sha256).hexdigest()


def authorization_header(secret: bytes, purpose: str = STORE_INTERNAL) -> str:
    return f"{AUTH_SCHEME} {derive(secret, purpose)}"


def check_authorization(header: str | None, expected_credential: str) -> bool:
    """Constant-time check of an Authorization header against a derived credential."""
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme != AUTH_SCHEME:
        return False
    return hmac.compare_digest(token.strip().encode(), expected_credential.encode())


def load_secret(*, secret_file: Path | None, default_dir: Path | None) -> bytes:
    """The cluster secret: from `secret_file` when given, else the environment variable,
    else `<default_dir>/cluster.secret`. Raises SecretError when none is found."""
    if secret_file is not None:
        return _read(secret_file)
    env = os.environ.get(SECRET_ENV)
    if env:
        secret = env.encode()
        if len(secret) < SECRET_BYTES_MIN:
            raise SecretError(f"{SECRET_ENV} is shorter than {SECRET_BYTES_MIN} bytes")
        return secret
    if default_dir is not None and (default_dir / SECRET_FILE_NAME).exists():
        return _read(default_dir / SECRET_FILE_NAME)
    where = f" or {default_dir / SECRET_FILE_NAME}" if default_dir else ""
    raise SecretError(f"no cluster secret: set {SECRET_ENV}, pass a secret file{where}")


def ensure_secret_file(directory: Path) -> Path:
    """Creates `<directory>/cluster.secret` (mode 0600) unless it exists: the local cluster's
    secret on a fresh machine."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SECRET_FILE_NAME
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return path


def _read(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except OSError as e:
        raise SecretError(f"cannot read the cluster secret {path}: {e.strerror}") from e
    if len(secret) < SECRET_BYTES_MIN:
        raise SecretError(f"the cluster secret in {path} is shorter than {SECRET_BYTES_MIN} bytes")
    return secret
