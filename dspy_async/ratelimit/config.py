"""What a user says about an account's limits (`RateLimit`), and which account a call uses."""

from __future__ import annotations

import hashlib
import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from ..errors import ConfigurationError
from .bucket import Limit
from .shared import check_url

__all__ = ["Account", "RateLimit", "for_lm"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """An account's rate limits, and where its budget is kept.

    `rpm` and `tpm` are the requests and tokens (prompt plus completion) the provider allows
    per `period` seconds: a minute, the way providers state them (a test against a simulator
    that counts per second sets `period=1`). Left out, they are learned from the response
    headers, which is also what happens with no `RateLimit` at all; configured values win
    over learned ones. `shared` is a Redis URL (`redis://host:6379/0`): every process and
    host that names it draws from one budget for the account (the `redis` extra).
    """

    rpm: int | None = None
    tpm: int | None = None
    shared: str | None = field(default=None, repr=False)
    period: float = 60.0

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigurationError(f"RateLimit.{name} must be a positive whole number")
        if not (isinstance(self.period, int | float) and math.isfinite(self.period)):
            raise ConfigurationError("RateLimit.period must be a number of seconds")
        if self.period <= 0:
            raise ConfigurationError("RateLimit.period must be a positive number of seconds")
        if self.shared is not None:
            check_url(self.shared)
            if importlib.util.find_spec("redis") is None:
                raise ConfigurationError(
                    "RateLimit(shared=...) needs the redis client: pip install 'dspy-async[redis]'"
                )

    def limits(self) -> Mapping[str, Limit]:
        """The configured limits by budget dimension."""
        limits: dict[str, Limit] = {}
        if self.rpm is not None:
            limits["requests"] = Limit.per(self.rpm, self.period)
        if self.tpm is not None:
            limits["tokens"] = Limit.per(self.tpm, self.period)
        return limits


@dataclass(frozen=True, slots=True)
class Account:
    """The budget a call draws from: provider, origin, a fingerprint of the API key (the
    first 16 hex digits of its SHA-256, never the key) and model. `key` names it in stores,
    `name` in events and logs."""

    provider: str
    origin: str
    fingerprint: str
    model: str

    @classmethod
    def of(cls, provider: str, url: httpx.URL, secret: str | None, model: str) -> Account:
        port = f":{url.port}" if url.port else ""
        fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else "no-key"
        return cls(provider, f"{url.scheme}://{url.host}{port}", fingerprint, model)

    @property
    def key(self) -> str:
        return f"{self.provider}|{self.origin}|{self.fingerprint}|{self.model}"

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model} at {self.origin} (key {self.fingerprint[:8]})"


def for_lm(rate_limit: object, *, rpm: object, tpm: object) -> RateLimit | None:
    """The budget an LM's arguments ask for: `rate_limit=`, or `rpm=`/`tpm=` (a local
    `RateLimit`), or learned limits when neither; None with `rate_limit=False` (no budget)."""
    if rate_limit is False:
        if rpm is not None or tpm is not None:
            raise ConfigurationError("LM rate_limit=False turns the budget off: drop rpm/tpm")
        return None
    if rate_limit is None:
        return RateLimit(rpm=rpm, tpm=tpm)  # type: ignore[arg-type]  # checked there
    if not isinstance(rate_limit, RateLimit):
        raise ConfigurationError(
            f"LM rate_limit must be a dspy_async.RateLimit, None or False, "
            f"not {type(rate_limit).__name__}"
        )
    if rpm is not None or tpm is not None:
        raise ConfigurationError("pass rpm/tpm to LM(...) or inside its RateLimit(...), not both")
    return rate_limit
