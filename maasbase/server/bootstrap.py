"""First-start work: the secret key (it encrypts stored secrets and the session-signing
secret is derived from it), admin user, worker registration token.

All of it is idempotent: running it on every start changes nothing once done.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.common.config import Settings
from maasbase.common.errors import SecretKeyMismatch
from maasbase.server import model_env
from maasbase.server.db import models as models_db
from maasbase.server.db import providers as providers_db
from maasbase.server.db import system_settings
from maasbase.server.db import users as users_db
from maasbase.server.security import derived_keys, passwords, secret_box
from maasbase.server.security.secret_box import SecretBox

logger = logging.getLogger(__name__)

ADMIN_USERNAME = "admin"
PASSWORD_FILE = "initial_admin_password"
TOKEN_FILE = "token"
SECRET_KEY_FILE = "secret_key"


@dataclass(frozen=True)
class BootstrapResult:
    jwt_secret: str
    admin_created: bool
    admin_password_file: Path | None
    token_file: Path
    secret_box: SecretBox


def write_secret_file(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` readable by the owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content + "\n")
    os.chmod(path, 0o600)


async def drop_stored_jwt_secret(session: AsyncSession) -> None:
    """Older versions kept the session-signing secret in the database, where a dump could
    forge sessions; it is now derived from the secret key, so the row goes."""
    if await system_settings.delete(session, system_settings.JWT_SECRET):
        logger.info(
            "removed the stored session-signing secret: it is derived from the secret key "
            "now; sessions signed before this start have ended (log in again)"
        )


async def ensure_admin(session: AsyncSession, settings: Settings) -> tuple[bool, Path | None]:
    if await users_db.get_by_username(session, ADMIN_USERNAME) is not None:
        return False, None
    if settings.bootstrap_password is not None:
        password = settings.bootstrap_password.get_secret_value()
        passwords.check_strength(password)
        password_file = None
    else:
        password = passwords.generate_password()
        password_file = settings.data_dir / PASSWORD_FILE
        write_secret_file(password_file, password)
    await users_db.create(
        session,
        username=ADMIN_USERNAME,
        password_hash=await passwords.hash_password(password),
        is_admin=True,
        full_name="Administrator",
    )
    return True, password_file


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def ensure_registration_token(session: AsyncSession, settings: Settings) -> Path:
    """Make ``<data-dir>/token`` hold a token whose hash the database knows."""
    token_file = settings.data_dir / TOKEN_FILE
    if settings.token is not None:
        token = settings.token.get_secret_value()
    elif token_file.exists():
        token = token_file.read_text().strip()
    else:
        token = secrets.token_hex(32)
    if not token_file.exists() or token_file.read_text().strip() != token:
        write_secret_file(token_file, token)
    stored = await system_settings.get(session, system_settings.REGISTRATION_TOKEN_HASH)
    if stored != token_hash(token):
        await system_settings.put(
            session, system_settings.REGISTRATION_TOKEN_HASH, token_hash(token)
        )
    return token_file


def load_secret_box(settings: Settings) -> SecretBox:
    """The key comes from the ``secret_key`` setting, else from ``<data-dir>/secret_key``
    (created on first start). Never from the database: a dump alone must not open it."""
    if settings.secret_key is not None:
        return SecretBox(
            settings.secret_key.get_secret_value(),
            source="the secret_key setting (MAAS_SECRET_KEY)",
        )
    key_file = settings.data_dir / SECRET_KEY_FILE
    if key_file.exists():
        key = key_file.read_text().strip()
    else:
        key = secret_box.generate_key()
        write_secret_file(key_file, key)
        logger.info("created %s; back it up together with the database", key_file)
    return SecretBox(key, source=str(key_file))


async def encrypt_provider_keys(session: AsyncSession, box: SecretBox) -> int:
    """Encrypt with the current (first) secret key the provider API keys stored in plain
    text by an older version or encrypted with an older key. Keys that no secret key
    reads are left as they are (the routing table reports them)."""
    plain = rotated = 0
    for provider_id, stored in await providers_db.stored_api_keys(session):
        if box.is_current(stored):
            continue
        try:
            new = box.reencrypt(stored)
        except SecretKeyMismatch:
            continue
        changed = await providers_db.replace_api_key(session, provider_id, stored, new)
        if secret_box.is_encrypted(stored):
            rotated += changed
        else:
            plain += changed
    if plain:
        logger.info("encrypted the stored API keys of %d provider(s)", plain)
    if rotated:
        logger.info(
            "re-encrypted the API keys of %d provider(s) with the first secret key; the "
            "older keys in %s are no longer needed for them", rotated, box.source
        )  # fmt: skip
    return plain + rotated


async def encrypt_model_env(session: AsyncSession, box: SecretBox) -> int:
    """Encrypt the secret-named variables a model stored in plain text (older versions),
    and re-encrypt with the first secret key the secret ones stored under an older key.
    The instances keep running: what they receive is unchanged."""
    changed = 0
    for model in await models_db.list_all(session):
        upgraded = model_env.upgraded(box, model_env.of_row(model))
        if upgraded is not None:
            model_env.store(model, upgraded)
            changed += 1
    if changed:
        await session.flush()
        logger.info("encrypted or re-encrypted the secret variables of %d model(s)", changed)
    return changed


async def run(session: AsyncSession, settings: Settings) -> BootstrapResult:
    box = load_secret_box(settings)
    jwt_secret = derived_keys.derive(box, derived_keys.SESSION_SIGNING)
    await drop_stored_jwt_secret(session)
    created, password_file = await ensure_admin(session, settings)
    token_file = await ensure_registration_token(session, settings)
    await encrypt_provider_keys(session, box)
    await encrypt_model_env(session, box)
    return BootstrapResult(
        jwt_secret=jwt_secret,
        admin_created=created,
        admin_password_file=password_file,
        token_file=token_file,
        secret_box=box,
    )
