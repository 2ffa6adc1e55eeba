"""Mosquitto's dynamic-security plugin: the initial file `pinhole up` writes (the API's
admin account and the default ACLs), and the commands the API sends on
`$CONTROL/dynamic-security/v1` to give a signed-in client broker credentials and take them
back (docs/operations/mqtt.md).

Every client gets a role of its user, `pinhole-u-<user id>`, allowing exactly: subscribe to
`pinhole/u/<user id>/#`, publish to `pinhole/in/<user id>/typing/+`. The defaults deny every
other publish and subscribe. The client's MQTT client id is fixed to its username, so no one
can take over another's session by reusing a client id."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Final

from realtime import topics

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = f"{CONTROL_TOPIC}/response"
SERVER_ROLE: Final = "pinhole-server"
# The API processes share the typing events: each is relayed by one of them.
SHARE_GROUP: Final = "pinhole-api"
USERNAME_PREFIX: Final = "c"
USERNAME_RANDOM_BYTES: Final = 12
PASSWORD_RANDOM_BYTES: Final = 24
# Mosquitto 2.0's dynamic-security password hash: PBKDF2-HMAC-SHA512, 12-byte salt.
_SALT_BYTES: Final = 12
_ITERATIONS: Final = 101
_DEFAULT_ACCESS: Final = {
    "publishClientSend": False,
    "publishClientReceive": True,
    "subscribe": False,
    "unsubscribe": True,
}


def _hashed(password: str) -> dict[str, Any]:
    salt = os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    return {
        "salt": base64.b64encode(salt).decode(),
        "password": base64.b64encode(digest).decode(),
        "iterations": _ITERATIONS,
    }


def _acl(kind: str, topic: str, *, priority: int = 0) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "priority": priority, "allow": True}


def initial_document(admin_username: str, admin_password: str) -> dict[str, Any]:
    """The plugin's starting state: the API's account with the server role only."""
    server_acls = [
        _acl("publishClientSend", f"{CONTROL_TOPIC}/#"),
        _acl("publishClientReceive", f"{CONTROL_TOPIC}/#"),
        _acl("subscribePattern", f"{CONTROL_TOPIC}/#"),
        _acl("publishClientSend", f"{topics.PREFIX}/u/#"),
        _acl("subscribePattern", f"{topics.PREFIX}/in/#"),
        # The plugin checks a shared subscription with its $share/<group>/ prefix.
        _acl("subscribePattern", f"$share/{SHARE_GROUP}/{topics.PREFIX}/in/#"),
        _acl("publishClientReceive", f"{topics.PREFIX}/in/#"),
    ]
    return {
        "defaultACLAccess": _DEFAULT_ACCESS,
        "clients": [
            {
                "username": admin_username,
                "textname": "pinhole API",
                "roles": [{"rolename": SERVER_ROLE}],
                **_hashed(admin_password),
            }
        ],
        "groups": [],
        "roles": [{"rolename": SERVER_ROLE, "acls": server_acls}],
    }


def write_initial(path: Path, admin_username: str, admin_password: str) -> None:
    """Writes the plugin file unless it exists (the broker rewrites it on every change)."""
    if path.exists():
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(initial_document(admin_username, admin_password), indent=2))
    tmp.chmod(0o600)
    os.replace(tmp, path)


def user_role(user_id: int) -> str:
    return f"pinhole-u-{int(user_id)}"


def create_role(user_id: int) -> dict[str, Any]:
    return {
        "command": "createRole",
        "rolename": user_role(user_id),
        "acls": [
            _acl("subscribePattern", topics.subscribe_pattern(user_id)),
            _acl("publishClientSend", topics.typing_publish_pattern(user_id)),
        ],
    }


def new_username() -> str:
    """Letters and digits only: no `+`, `#` or `/` can reach a topic or an ACL through it."""
    return USERNAME_PREFIX + secrets.token_hex(USERNAME_RANDOM_BYTES)


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_RANDOM_BYTES)


def create_client(username: str, password: str, user_id: int) -> dict[str, Any]:
    return {
        "command": "createClient",
        "username": username,
        "password": password,
        "clientid": username,
        "textname": f"user {int(user_id)}",
        "roles": [{"rolename": user_role(user_id)}],
    }


def delete_client(username: str) -> dict[str, Any]:
    """Deleting a client also disconnects it at once (the plugin kicks it)."""
    return {"command": "deleteClient", "username": username}
