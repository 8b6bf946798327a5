"""Password hashes are cheap under pytest only: production keeps bcrypt's default cost."""

import bcrypt
import pytest

from finance_core.access.users import BCRYPT_ROUNDS, TEST_BCRYPT_ROUNDS_VARIABLE, hash_password


def _cost(password_hash: str) -> int:
    return int(password_hash.split("$")[2])


def test_the_tests_hash_at_the_cheap_cost_they_set() -> None:
    password_hash = hash_password("correct horse")
    assert _cost(password_hash) == 4
    assert bcrypt.checkpw(b"correct horse", password_hash.encode())


def test_the_cheap_cost_is_ignored_outside_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_BCRYPT_ROUNDS_VARIABLE, "4")
    monkeypatch.delenv("PYTEST_VERSION")
    assert _cost(hash_password("correct horse")) == BCRYPT_ROUNDS == 12


def test_without_the_variable_the_default_cost_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TEST_BCRYPT_ROUNDS_VARIABLE)
    assert _cost(hash_password("correct horse")) == 12
