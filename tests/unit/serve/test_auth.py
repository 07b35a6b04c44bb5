"""Bearer tokens (serve.auth): file and environment sources, rotation, constant-time check, clear refusals."""

from __future__ import annotations

import os

import pytest

from alarm.config.serve import AuthConfig
from alarm.errors import ConfigError, Unauthenticated
from services.serve.auth import Tokens, grpc_authorization


def test_off_by_default_accepts_anything():
    Tokens(AuthConfig()).check(None)
    Tokens(AuthConfig()).check("Bearer whatever")


def test_file_tokens_rotate_without_a_restart(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("# comment\nalpha\n\n  beta  \n")
    tokens = Tokens(AuthConfig(token_file=str(f)))
    tokens.check("Bearer alpha")
    tokens.check("bearer beta")  # the scheme is case-insensitive
    for bad, needle in [(None, "requires a bearer token"), ("", "requires a bearer token"),
                        ("Bearer gamma", "not accepted"), ("Basic alpha", "Bearer <token>"), ("Bearer ", "Bearer")]:
        with pytest.raises(Unauthenticated, match=needle):
            tokens.check(bad)
    f.write_text("gamma-longer\n")  # a rotated Secret: another size, so the reread is not mtime-resolution bound
    tokens.check("Bearer gamma-longer")
    with pytest.raises(Unauthenticated):
        tokens.check("Bearer alpha")


def test_env_tokens(monkeypatch):
    monkeypatch.setenv("ALARM_TEST_TOKENS", "one, two\nthree")
    tokens = Tokens(AuthConfig(token_env="ALARM_TEST_TOKENS"))
    for t in ("one", "two", "three"):
        tokens.check(f"Bearer {t}")
    with pytest.raises(Unauthenticated):
        tokens.check("Bearer one, two")


def test_a_configured_source_without_tokens_fails_at_start(tmp_path, monkeypatch):
    monkeypatch.delenv("ALARM_TEST_NONE", raising=False)
    with pytest.raises(ConfigError, match="holds no token"):
        Tokens(AuthConfig(token_env="ALARM_TEST_NONE"))
    with pytest.raises(ConfigError, match="cannot be read"):
        Tokens(AuthConfig(token_file=str(tmp_path / "missing")))
    with pytest.raises(ValueError):
        AuthConfig(token_env="not a name")


def test_grpc_metadata_key():
    class Ctx:
        def invocation_metadata(self):
            return [("application", "alarm"), ("authorization", "Bearer x")]

    assert grpc_authorization(Ctx()) == "Bearer x"
    assert os.environ.get("ALARM_TEST_TOKENS") is None
