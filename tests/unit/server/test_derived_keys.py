"""Secrets derived from the secret key: one per purpose, the same on every replica."""

from __future__ import annotations

import pytest

from maasbase.server.security import derived_keys, secret_box
from maasbase.server.security.derived_keys import derive
from maasbase.server.security.secret_box import SecretBox


def test_same_key_and_purpose_give_the_same_secret_everywhere() -> None:
    key = secret_box.generate_key()
    one = derive(SecretBox(key, source="replica 1"), derived_keys.SESSION_SIGNING)
    two = derive(key, derived_keys.SESSION_SIGNING)
    assert one == two
    assert len(one) == 64
    assert key not in one


def test_each_purpose_and_each_key_gives_another_secret() -> None:
    key, other = secret_box.generate_key(), secret_box.generate_key()
    purposes = [
        derived_keys.SESSION_SIGNING,
        derived_keys.WORKER_API,
        derived_keys.MODEL_ENV_DIGEST,
        "worker-data-plane",
    ]
    secrets = {derive(key, purpose) for purpose in purposes}
    assert len(secrets) == len(purposes)
    assert derive(key, "worker-api") != derive(other, "worker-api")


def test_the_first_key_counts_so_rotation_ends_derived_secrets() -> None:
    old, new = secret_box.generate_key(), secret_box.generate_key()
    before = derive(old, derived_keys.SESSION_SIGNING)
    # Older keys after the first still decrypt, but derive nothing.
    assert derive(f"{old}\n{new}", derived_keys.SESSION_SIGNING) == before
    assert derive(f"{new},{old}", derived_keys.SESSION_SIGNING) != before


def test_a_purpose_is_required() -> None:
    with pytest.raises(ValueError, match="purpose"):
        derive(secret_box.generate_key(), "")
