"""Bearer tokens with roles, and a per-token rate limit.

Tokens come from a file (`--tokens FILE`) or the CELLSCHED_API_TOKENS variable, one
`role:name:secret` per line (or comma-separated in the variable). A secret may be given
as `sha256:<hex>`, so the file need not hold it in the clear. Only SHA-256 digests are
kept in memory; a request's token is hashed and compared to every digest with
hmac.compare_digest, so the time taken does not depend on how much of it matched.
A token never reaches a log line or an error body: failures name the principal at most.

Roles nest: reader (GET) < submitter (jobs) < operator (machines, node side, everything).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from cellsched.cellstate.errors import InvalidInputError

from .errors import ApiError

TOKENS_ENV = "CELLSCHED_API_TOKENS"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class Role(IntEnum):
    READER = 1
    SUBMITTER = 2
    OPERATOR = 3


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass
class TokenTable:
    entries: list[tuple[bytes, Principal]] = field(default_factory=list)

    def add(self, role: Role, name: str, secret: str) -> None:
        if secret.startswith("sha256:"):
            raw = bytes.fromhex(secret[7:])
            if len(raw) != 32:
                raise InvalidInputError(f"token {name}: a sha256 digest has 64 hex digits")
        else:
            if len(secret) < 16:
                raise InvalidInputError(f"token {name}: a secret needs at least 16 characters")
            raw = digest(secret)
        # A name is who the audit records and the rate limiter's bucket: two tokens under one
        # name could not be told apart. One secret under two entries would be whichever came
        # last, perhaps with more rights than meant.
        for known, who in self.entries:
            if who.name == name:
                raise InvalidInputError(f"token {name}: the name is given twice; every token needs a name of its own")
            if hmac.compare_digest(known, raw):
                raise InvalidInputError(f"token {name}: the same secret as token {who.name}")
        self.entries.append((raw, Principal(name, role)))

    def lookup(self, secret: str) -> Principal | None:
        d = digest(secret)
        found = None
        for raw, who in self.entries:  # no early exit: every digest is compared
            if hmac.compare_digest(raw, d):
                found = who
        return found

    @classmethod
    def parse(cls, text: str, where: str) -> TokenTable:
        table = cls()
        for n, line in enumerate(re.split(r"[\n,]", text), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(":", 2)
            if len(parts) != 3:
                raise InvalidInputError(f"{where}: entry {n}: expected role:name:secret")
            role, name, secret = parts
            if role.upper() not in Role.__members__:
                raise InvalidInputError(f"{where}: entry {n}: role {role!r} is not reader, submitter or operator")
            if not _NAME.match(name):
                raise InvalidInputError(f"{where}: entry {n}: bad name {name!r}")
            table.add(Role[role.upper()], name, secret)
        if not table.entries:
            raise InvalidInputError(f"{where}: no tokens")
        return table

    @classmethod
    def load(cls, path: str | None) -> TokenTable:
        if path:
            return cls.parse(Path(path).read_text(), path)
        env = os.environ.get(TOKENS_ENV)
        if env:
            return cls.parse(env, TOKENS_ENV)
        raise InvalidInputError(f"no tokens: give --tokens FILE or set {TOKENS_ENV}")


class RateLimiter:
    """A token bucket per principal: `rate` requests per second, bursts up to `burst`.
    Per API process (the processes share nothing but the store)."""

    def __init__(self, rate: float, burst: int):
        if rate <= 0 or burst < 1:
            raise InvalidInputError("rate limit: rate must be positive and burst at least 1")
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> float:
        """0 when the request may go, else the seconds until one may."""
        now = time.monotonic()
        with self._lock:
            level, at = self._buckets.get(who, (float(self.burst), now))
            level = min(float(self.burst), level + (now - at) * self.rate)
            if level >= 1.0:
                self._buckets[who] = (level - 1.0, now)
                return 0.0
            self._buckets[who] = (level, now)
            return (1.0 - level) / self.rate


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="cellsched"'})


def authorize(tokens: TokenTable, limiter: RateLimiter, header: str | None, need: Role) -> Principal:
    if not header:
        raise unauthorized("missing Authorization: Bearer <token>")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise unauthorized("the Authorization header must be 'Bearer <token>'")
    who = tokens.lookup(secret.strip())
    if who is None:
        raise unauthorized("unknown token")
    wait = limiter.take(who.name)
    if wait > 0:
        raise ApiError(429, "rate limited", f"token {who.name!r} is over its rate limit",
                       headers={"Retry-After": str(max(1, math.ceil(wait)))})
    if who.role < need:
        raise ApiError(403, "forbidden", f"token {who.name!r} has role {who.role.name.lower()}; "
                       f"this needs {need.name.lower()}")
    return who
