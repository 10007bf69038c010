"""Settings precedence: flags > MAAS_* environment > YAML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from maasbase.common.config import load_settings
from maasbase.common.errors import ConfigurationError


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAAS_PORT", "MAAS_HOST", "MAAS_CONFIG", "MAAS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.database_url is None
    assert settings.data_dir.name == "maas-base"


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "maas.yaml"
    config.write_text("port: 7000\nhost: 0.0.0.0\nlog_level: debug\n")
    monkeypatch.setenv("MAAS_CONFIG", str(config))
    settings = load_settings()
    assert (settings.port, settings.host, settings.log_level) == (7000, "0.0.0.0", "debug")
    monkeypatch.setenv("MAAS_PORT", "7500")
    assert load_settings().port == 7500
    assert load_settings(port=7600).port == 7600
    assert load_settings(port=None).port == 7500  # an absent flag does not override


def test_config_flag_and_secrets(tmp_path: Path) -> None:
    config = tmp_path / "maas.yaml"
    config.write_text(f"data_dir: {tmp_path / 'd'}\nbootstrap_password: s3cret-pass\n")
    settings = load_settings(config_file=config)
    assert settings.data_dir == tmp_path / "d"
    assert settings.bootstrap_password is not None
    assert "s3cret-pass" not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "hint"),
    [
        ({"port": 70000}, "port"),
        ({"log_level": "loud"}, "log_level"),
        ({"config_file": Path("/nonexistent/maas.yaml")}, "does not exist"),
    ],
)
def test_bad_settings_are_configuration_errors(overrides: dict[str, object], hint: str) -> None:
    with pytest.raises(ConfigurationError, match=hint):
        load_settings(**overrides)


def test_unknown_yaml_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "maas.yaml"
    config.write_text("prot: 9000\n")
    with pytest.raises(ConfigurationError, match="prot"):
        load_settings(config_file=config)


def test_trusted_proxies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAAS_TRUSTED_PROXIES", raising=False)
    assert load_settings().trusted_proxies == []
    monkeypatch.setenv("MAAS_TRUSTED_PROXIES", "10.0.0.5, 10.1.0.0/16")
    assert load_settings().trusted_proxies == ["10.0.0.5", "10.1.0.0/16"]
    config = tmp_path / "maas.yaml"
    config.write_text("trusted_proxies: [192.0.2.1, '2001:db8::/32']\n")
    monkeypatch.delenv("MAAS_TRUSTED_PROXIES")
    assert load_settings(config_file=config).trusted_proxies == ["192.0.2.1", "2001:db8::/32"]
    monkeypatch.setenv("MAAS_TRUSTED_PROXIES", "proxy.example")
    with pytest.raises(ConfigurationError, match="not an IP address or network"):
        load_settings()
