"""A standalone gateway's own credential.

Given the registration token, the gateway registers once at start
(``POST /api/v1/gateways/register``) and uses the ``mbg_...`` credential it gets for every
later call; with ``--data-dir`` it keeps that credential (mode 0600) and re-attaches with
it on the next start. Given an ``mbg_...`` credential, it uses it as it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import socket
from pathlib import Path

from pydantic import BaseModel, ValidationError

from maasbase.common.errors import ConfigurationError, Unavailable
from maasbase.common.gateways import (
    GATEWAY_CREDENTIAL_PREFIX,
    GatewayRegistered,
    GatewayRegistration,
)
from maasbase.gateway.control import ControlPlaneClient, error_message

logger = logging.getLogger(__name__)

REGISTER_PATH = "/api/v1/gateways/register"
IDENTITY_FILE = "gateway/identity.json"
MAX_RETRY_SECONDS = 5.0


class GatewayIdentity(BaseModel):
    server_url: str
    gateway_id: int
    name: str
    credential: str


def default_name(persistent: bool) -> str:
    """The host name; with a random suffix when the credential is not kept, so a restart
    registers a new identity instead of running into the old one's name."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0])[:50]
    host = host.lstrip("-_.") or "gateway"
    return host if persistent else f"{host}-{secrets.token_hex(3)}"


def load(data_dir: Path) -> GatewayIdentity | None:
    path = data_dir / IDENTITY_FILE
    if not path.exists():
        return None
    try:
        return GatewayIdentity.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError):
        logger.warning("ignoring unreadable gateway identity %s; registering anew", path)
        return None


def save(data_dir: Path, identity: GatewayIdentity) -> None:
    path = data_dir / IDENTITY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(identity.model_dump_json(indent=2))
    os.replace(tmp, path)


async def obtain_credential(
    client: ControlPlaneClient, token: str, *, name: str | None, data_dir: Path | None
) -> str:
    """The gateway credential to use: ``token`` itself when it is one, else the stored one
    (re-attached), else one issued for the registration token."""
    if token.startswith(GATEWAY_CREDENTIAL_PREFIX):
        return token
    stored = load(data_dir) if data_dir is not None else None
    if stored is not None and stored.server_url != client.server_url:
        logger.info("stored gateway identity is for %s; registering anew", stored.server_url)
        stored = None
    name = name or (stored.name if stored else default_name(data_dir is not None))
    if stored is not None and stored.name == name:
        registered = await _register(client, stored.credential, name)
        if registered is not None:
            logger.info("re-attached as gateway %s (id %d)", registered.name, registered.id)
            return registered.credential
        logger.info("stored gateway credential refused; registering with the token")
    registered = await _register(client, token, name)
    if registered is None:
        raise ConfigurationError(
            f"the control plane at {client.server_url} refused the registration token; "
            "start the gateway with the token in the server's <data-dir>/token, or with a "
            "gateway credential (mbg_...) from POST /api/v1/gateways"
        )
    if data_dir is not None:
        save(
            data_dir,
            GatewayIdentity(
                server_url=client.server_url,
                gateway_id=registered.id,
                name=registered.name,
                credential=registered.credential,
            ),
        )
    logger.info("registered as gateway %s (id %d)", registered.name, registered.id)
    if data_dir is None:
        logger.info("no --data-dir: the next start registers a new gateway identity")
    return registered.credential


async def _register(client: ControlPlaneClient, bearer: str, name: str) -> GatewayRegistered | None:
    """One registration, retried while the control plane is unreachable; ``None`` when
    it refuses ``bearer`` (401)."""
    body = GatewayRegistration(name=name).model_dump_json().encode()
    delay = 0.5
    while True:
        try:
            status, data = await client.request("POST", REGISTER_PATH, body=body, bearer=bearer)
            break
        except Unavailable as exc:
            logger.warning("gateway registration failed: %s; retrying in %.1f s", exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_SECONDS)
    if status == 401:
        return None
    if status != 200:
        raise ConfigurationError(
            f"the control plane at {client.server_url} refused to register gateway "
            f"{name!r} (HTTP {status}): {error_message(data)}"
        )
    return GatewayRegistered.model_validate_json(data)
