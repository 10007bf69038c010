"""Encryption at rest of provider API keys, and where its key comes from."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from maasbase.common.config import Settings
from maasbase.common.errors import ConfigurationError, SecretKeyMismatch
from maasbase.server.bootstrap import SECRET_KEY_FILE, load_secret_box
from maasbase.server.security import secret_box
from maasbase.server.security.secret_box import SecretBox


def test_round_trip_hides_the_value() -> None:
    box = SecretBox(secret_box.generate_key(), source="test")
    stored = box.encrypt("sk-upstream-123")
    assert stored.startswith("fernet:")
    assert "sk-upstream-123" not in stored
    assert box.encrypt("sk-upstream-123") != stored  # fresh IV each time
    assert box.decrypt(stored) == "sk-upstream-123"


def test_plain_value_from_an_older_version_reads_as_is() -> None:
    box = SecretBox(secret_box.generate_key(), source="test")
    assert not secret_box.is_encrypted("sk-plain")
    assert box.decrypt("sk-plain") == "sk-plain"


def test_wrong_key_is_a_typed_error_that_names_the_key_source() -> None:
    stored = SecretBox(secret_box.generate_key(), source="old").encrypt("sk-upstream")
    other = SecretBox(secret_box.generate_key(), source="/data/secret_key")
    with pytest.raises(SecretKeyMismatch, match=r"secret key changed.*/data/secret_key"):
        other.decrypt(stored)
    with pytest.raises(SecretKeyMismatch):
        other.decrypt(stored[:-4] + "AAAA")  # tampered
    with pytest.raises(SecretKeyMismatch):
        other.decrypt("fernet:é")  # damaged


@pytest.mark.parametrize("bad", ["", "short", "x" * 44])
def test_a_key_that_is_not_a_fernet_key_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="generate one with"):
        SecretBox(bad, source="MAAS_SECRET_KEY")


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = load_secret_box(settings)
    key_file = settings.data_dir / SECRET_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    stored = first.encrypt("sk-upstream")
    second = load_secret_box(settings)
    assert second.decrypt(stored) == "sk-upstream"
    assert second.source == str(key_file)


def test_setting_wins_over_the_file_and_writes_none(tmp_path: Path) -> None:
    key = secret_box.generate_key()
    settings = Settings(data_dir=tmp_path / "data", secret_key=SecretStr(key))
    box = load_secret_box(settings)
    assert SecretBox(key, source="test").decrypt(box.encrypt("sk-x")) == "sk-x"
    assert not (settings.data_dir / SECRET_KEY_FILE).exists()
    assert "MAAS_SECRET_KEY" in box.source


def test_damaged_key_file_stops_the_start_instead_of_replacing_the_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    key_file = settings.data_dir / SECRET_KEY_FILE
    key_file.parent.mkdir(parents=True)
    key_file.write_text("not a key\n")
    with pytest.raises(ConfigurationError, match=str(key_file)):
        load_secret_box(settings)
    assert key_file.read_text() == "not a key\n"


def test_several_keys_encrypt_with_the_first_and_decrypt_with_any() -> None:
    old, new = secret_box.generate_key(), secret_box.generate_key()
    under_old = SecretBox(old, source="test").encrypt("sk-upstream")
    box = SecretBox(f"{new}, {old}", source="test")
    assert box.key_count == 2
    assert box.decrypt(under_old) == "sk-upstream"
    assert not box.is_current(under_old)
    rotated = box.reencrypt(under_old)
    assert box.is_current(rotated)
    assert SecretBox(new, source="test").decrypt(rotated) == "sk-upstream"
    with pytest.raises(SecretKeyMismatch):
        SecretBox(old, source="test").decrypt(box.encrypt("sk-x"))
    assert not box.is_current("sk-plain")
    assert box.is_current(box.reencrypt("sk-plain"))


def test_a_value_no_key_reads_cannot_be_reencrypted() -> None:
    stored = SecretBox(secret_box.generate_key(), source="gone").encrypt("sk-upstream")
    box = SecretBox(secret_box.generate_key(), source="/data/secret_key")
    assert not box.is_current(stored)
    with pytest.raises(SecretKeyMismatch, match="/data/secret_key"):
        box.reencrypt(stored)


def test_key_file_may_hold_one_key_a_line_newest_first(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    old = load_secret_box(settings)
    stored = old.encrypt("sk-upstream")
    key_file = settings.data_dir / SECRET_KEY_FILE
    new_key = secret_box.generate_key()
    key_file.write_text(f"{new_key}\n{key_file.read_text().strip()}\n")
    box = load_secret_box(settings)
    assert box.key_count == 2
    assert box.decrypt(stored) == "sk-upstream"
    assert SecretBox(new_key, source="test").decrypt(box.encrypt("sk-y")) == "sk-y"


def test_the_bad_key_among_several_is_named() -> None:
    good = secret_box.generate_key()
    with pytest.raises(ConfigurationError, match="secret key 2 in MAAS_SECRET_KEY"):
        SecretBox(f"{good},not-a-key", source="MAAS_SECRET_KEY")
    with pytest.raises(ConfigurationError, match="holds no secret key"):
        SecretBox(" , \n", source="MAAS_SECRET_KEY")
