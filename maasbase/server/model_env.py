"""A model's environment variables: plain ones stored and shown as they are, secret ones
encrypted at rest and write-only.

A variable is secret when its name says so (``*_TOKEN``, ``*_KEY``, ``*_SECRET``,
``*_PASSWORD``, ``HF_TOKEN``, ... see ``common.secret_env``), when the model lists it in
``secret_env``, or once stored as secret: it stays secret until removed. Secret values are
encrypted with the secret key (``SecretBox``) in the row's ``secret_env`` column, never
returned by the API (which lists their names only) and decrypted only into the
assignments of the worker that runs the model's instances.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from maasbase.common.errors import InvalidRequest, SecretKeyMismatch
from maasbase.common.secret_env import is_secret_name
from maasbase.server.db.tables import Model
from maasbase.server.security import derived_keys
from maasbase.server.security.secret_box import SecretBox

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredEnv:
    plain: dict[str, str] = field(default_factory=dict)
    # name -> value encrypted with the secret key
    secret: dict[str, str] = field(default_factory=dict)

    @property
    def secret_names(self) -> list[str]:
        return sorted(self.secret)


def of_row(model: Model) -> StoredEnv:
    return StoredEnv(plain=dict(model.env), secret=dict(model.secret_env or {}))


def store(model: Model, env: StoredEnv) -> None:
    model.env = dict(env.plain)
    model.secret_env = dict(env.secret)


def _unset(marked: Iterable[str], known: Iterable[str]) -> None:
    if missing := sorted(set(marked) - set(known)):
        raise InvalidRequest(
            f"secret_env names {missing[0]}, which env does not set; give its value in env"
        )


def for_new(box: SecretBox, env: Mapping[str, str], marked: Iterable[str]) -> StoredEnv:
    """The stored form of a new model's ``env``, ``marked`` naming extra secret ones."""
    marked = set(marked)
    _unset(marked, env)
    secret = {n for n in env if n in marked or is_secret_name(n)}
    return StoredEnv(
        plain={n: v for n, v in env.items() if n not in secret},
        secret={n: box.encrypt(v) for n, v in env.items() if n in secret},
    )


def patched(
    box: SecretBox, stored: StoredEnv, changes: Mapping[str, str | None], marked: Iterable[str]
) -> StoredEnv:
    """``stored`` after a merge patch: a value sets the variable, ``None`` removes it, a
    variable left out keeps its value (a secret one without being sent again). Names in
    ``marked`` become secret, a plain one already stored included."""
    marked = set(marked)
    plain, secret = dict(stored.plain), dict(stored.secret)
    for name, value in changes.items():
        plain.pop(name, None)
        secret.pop(name, None)
        if value is None:
            continue
        if name in marked or name in stored.secret or is_secret_name(name):
            secret[name] = box.encrypt(value)
        else:
            plain[name] = value
    _unset(marked, [*plain, *secret])
    for name in marked - secret.keys():
        secret[name] = box.encrypt(plain.pop(name))
    return StoredEnv(plain=plain, secret=secret)


def reveal(box: SecretBox, stored: StoredEnv) -> dict[str, str]:
    """Every variable with its value: for the worker that runs the model only.
    ``SecretKeyMismatch`` when a secret one does not decrypt."""
    return {**stored.plain, **{n: box.decrypt(v) for n, v in stored.secret.items()}}


def reveal_for_worker(
    box: SecretBox, model: Model, reported: set[str] | None = None
) -> dict[str, str]:
    """:func:`reveal`, leaving out (and logging once per stored value) secret variables
    that no secret key decrypts, so one such model never stops a worker's assignments."""
    stored = of_row(model)
    env = dict(stored.plain)
    for name, value in stored.secret.items():
        try:
            env[name] = box.decrypt(value)
        except SecretKeyMismatch as exc:
            if reported is None or value not in reported:
                if reported is not None:
                    reported.add(value)
                logger.error(
                    "model %r: secret variable %s is left out of its instances' environment: "
                    "%s (set it again with PATCH /api/v1/models/%d)",
                    model.name, name, exc.message, model.id,
                )  # fmt: skip
    return env


def for_hash(box: SecretBox, stored: StoredEnv) -> dict[str, str]:
    """The variables as the spec hash sees them: secret values replaced by a keyed digest
    (HMAC with a secret derived from the secret key), so a new secret value still rolls
    the instances while the stored hash reveals nothing about it."""
    key = derived_keys.derive(box, derived_keys.MODEL_ENV_DIGEST).encode()
    digests = {
        name: "secret:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
        for name, value in reveal(box, StoredEnv(secret=stored.secret)).items()
    }
    return {**stored.plain, **digests}


def upgraded(box: SecretBox, stored: StoredEnv) -> StoredEnv | None:
    """``stored`` with secret-named plain variables (from an older version) encrypted and
    secret values under an older key re-encrypted with the first; ``None`` when nothing
    changes. Values that no key decrypts stay as they are."""
    plain = {n: v for n, v in stored.plain.items() if not is_secret_name(n)}
    secret = {n: box.encrypt(v) for n, v in stored.plain.items() if is_secret_name(n)}
    for name, value in stored.secret.items():
        try:
            secret[name] = value if box.is_current(value) else box.reencrypt(value)
        except SecretKeyMismatch:
            secret[name] = value
    if plain == stored.plain and secret == stored.secret:
        return None
    return StoredEnv(plain=plain, secret=secret)
