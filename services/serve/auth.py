"""Bearer tokens, checked by the ingress for both protocols (`serve.auth`): gRPC metadata `authorization: Bearer
<token>`, HTTP header `Authorization: Bearer <token>`. The health service stays open so probes need no secret.

    tokens = Tokens(cfg.auth)
    tokens.check(headers.get("authorization"))   # Unauthenticated (UNAUTHENTICATED / 401) unless it is accepted

Tokens come from a file (one per line; a mounted Kubernetes Secret, reread when it changes) and/or an environment
variable (comma- or newline-separated). Every accepted token is compared in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hmac
import os
import re
from pathlib import Path

from alarm.config.serve import AuthConfig
from alarm.errors import ConfigError, Unauthenticated

SCHEME = "bearer"


class Tokens:
    """The tokens a server accepts; `enabled` False = every request is accepted."""

    def __init__(self, cfg: AuthConfig):
        self.cfg = cfg
        self._file_tokens: tuple[bytes, ...] = ()
        self._file_stamp: tuple[float, int] | None = None
        if cfg.enabled and not self.accepted():
            raise ConfigError(f"serve.auth is set ({_sources(cfg)}) but holds no token; put at least one token there, "
                              "or unset serve.auth to serve without authentication")

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    def accepted(self) -> tuple[bytes, ...]:
        """Every accepted token now (the file is reread when its modification time or size changed)."""
        env = ()
        if self.cfg.token_env:
            raw = os.environ.get(self.cfg.token_env, "")
            env = tuple(t.strip().encode() for t in re.split(r"[,\n]", raw) if t.strip())
        return env + self._from_file()

    def _from_file(self) -> tuple[bytes, ...]:
        if not self.cfg.token_file:
            return ()
        path = Path(self.cfg.token_file)
        try:
            st = path.stat()
        except OSError as e:
            raise ConfigError(f"serve.auth.token_file {path} cannot be read ({e.strerror}); mount the token file "
                              "there or fix the path") from None
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._file_stamp:
            lines = path.read_bytes().splitlines()
            self._file_tokens = tuple(t.strip() for t in lines if t.strip() and not t.startswith(b"#"))
            self._file_stamp = stamp
        return self._file_tokens

    def check(self, authorization: str | None) -> None:
        """Accept `authorization` ("Bearer <token>") or raise Unauthenticated; a no-op when auth is off."""
        if not self.enabled:
            return
        if not authorization:
            raise Unauthenticated("this server requires a bearer token: send `authorization: Bearer <token>` "
                                  "(gRPC metadata) or the `Authorization` header (HTTP)")
        scheme, _, token = authorization.strip().partition(" ")
        presented = token.strip().encode()
        if scheme.lower() != SCHEME or not presented:
            raise Unauthenticated("the authorization value must be `Bearer <token>`")
        # compare against every token (no early exit), each in constant time
        ok = False
        for t in self.accepted():
            ok |= hmac.compare_digest(presented, t)
        if not ok:
            raise Unauthenticated("the bearer token is not accepted by this server")


def grpc_authorization(grpc_context) -> str | None:
    """The `authorization` metadata of a gRPC call (keys are lower-case on the wire)."""
    return next((v for k, v in grpc_context.invocation_metadata() if k == "authorization"), None)


def _sources(cfg: AuthConfig) -> str:
    return ", ".join(s for s in (cfg.token_file and f"token_file={cfg.token_file}",
                                 cfg.token_env and f"token_env={cfg.token_env}") if s)
