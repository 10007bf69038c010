"""Which model variables are secret, and how creating and patching treat them."""

from __future__ import annotations

import pytest

from maasbase.common.errors import InvalidRequest
from maasbase.common.secret_env import is_secret_name
from maasbase.server import model_env
from maasbase.server.model_env import StoredEnv
from maasbase.server.security import secret_box
from maasbase.server.security.secret_box import SecretBox

BOX = SecretBox(secret_box.generate_key(), source="test")


@pytest.mark.parametrize(
    "name",
    ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "aws_secret", "DB_PASSWORD",
     "MY_TOKEN", "TOKEN"],
)  # fmt: skip
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["LOG_LEVEL", "HF_HOME", "CUDA_VISIBLE_DEVICES", "TOKENIZERS_PARALLELISM", "KEYS"]
)
def test_plain_names(name: str) -> None:
    assert not is_secret_name(name)


def test_new_env_splits_secret_from_plain() -> None:
    env = model_env.for_new(BOX, {"HF_TOKEN": "hf_x", "ORG": "o", "A": "1"}, ["ORG"])
    assert env.plain == {"A": "1"}
    assert env.secret_names == ["HF_TOKEN", "ORG"]
    assert "hf_x" not in str(env.secret)
    assert model_env.reveal(BOX, env) == {"HF_TOKEN": "hf_x", "ORG": "o", "A": "1"}
    with pytest.raises(InvalidRequest, match="secret_env names B"):
        model_env.for_new(BOX, {"A": "1"}, ["B"])


def test_patch_keeps_left_out_secrets_and_removes_nulls() -> None:
    stored = model_env.for_new(BOX, {"HF_TOKEN": "hf_x", "A": "1", "B": "2"}, [])
    patched = model_env.patched(BOX, stored, {"A": "10", "B": None, "C": "3"}, [])
    assert model_env.reveal(BOX, patched) == {"HF_TOKEN": "hf_x", "A": "10", "C": "3"}
    assert patched.secret == stored.secret  # not re-encrypted: unchanged
    removed = model_env.patched(BOX, patched, {"HF_TOKEN": None}, [])
    assert removed.secret == {}


def test_once_secret_a_variable_stays_secret_and_plain_ones_can_be_marked() -> None:
    stored = model_env.for_new(BOX, {"ORG": "o", "A": "1"}, ["ORG"])
    again = model_env.patched(BOX, stored, {"ORG": "o2"}, [])
    assert again.plain == {"A": "1"}
    assert model_env.reveal(BOX, again)["ORG"] == "o2"
    marked = model_env.patched(BOX, again, {}, ["A"])
    assert marked.plain == {}
    assert marked.secret_names == ["A", "ORG"]
    with pytest.raises(InvalidRequest, match="secret_env names NOPE"):
        model_env.patched(BOX, again, {}, ["NOPE"])


def test_hash_view_changes_with_the_value_but_does_not_contain_it() -> None:
    one = model_env.for_new(BOX, {"HF_TOKEN": "hf_x"}, [])
    same = model_env.for_new(BOX, {"HF_TOKEN": "hf_x"}, [])
    other = model_env.for_new(BOX, {"HF_TOKEN": "hf_y"}, [])
    assert model_env.for_hash(BOX, one) == model_env.for_hash(BOX, same)  # despite fresh IVs
    assert model_env.for_hash(BOX, one) != model_env.for_hash(BOX, other)
    assert "hf_x" not in str(model_env.for_hash(BOX, one))


def test_upgrade_encrypts_plain_secrets_from_an_older_version() -> None:
    old = StoredEnv(plain={"HF_TOKEN": "hf_x", "A": "1"})
    upgraded = model_env.upgraded(BOX, old)
    assert upgraded is not None
    assert upgraded.plain == {"A": "1"}
    assert model_env.reveal(BOX, upgraded) == {"HF_TOKEN": "hf_x", "A": "1"}
    assert model_env.upgraded(BOX, upgraded) is None
