"""The Budget stage: an attempt takes one request and its estimated tokens from its account's
rate-limit budget before it may be sent, and settles up once answered.

The wait for budget holds no concurrency slot (this stage comes before Slots) and counts
against the call's `max_elapsed`: a call that cannot get budget before its deadline fails with
`RateLimitError` at once, without sending. Waiting attempts of one process queue in arrival
order and only the first asks the store, so a thousand queued calls cost one timer, not a
thousand polls of Redis. Once answered, the attempt returns what its estimate overshot (or
pays what it undershot), hands the rate-limit headers to the budget, and a 429 with
Retry-After closes the whole account's gate until then (when it speaks for the account: it
carries rate-limit headers, or the account's limits are known). `Checkpoint`, placed after Slots,
turns back an attempt that got its slot while such a pause is on, so none is sent into it.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections import OrderedDict, deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import _clock, _runtime, events
from ..errors import RateLimitError
from ..providers.base import Reply
from ..ratelimit.bucket import BLIND, Grant, Limit, Settlement
from ..ratelimit.config import Account, RateLimit
from ..ratelimit.headers import observe
from ..ratelimit.shared import RedisStore
from ..ratelimit.store import MAX_ACCOUNTS, LocalStore, Store
from ..retry import AttemptFailed, AttemptState
from . import Call, Handler

__all__ = [
    "DEFAULT_COMPLETION_ESTIMATE",
    "AccountBudget",
    "Budget",
    "Checkpoint",
    "estimate",
    "forget",
]

# Completion tokens assumed for a request that sets no max_tokens; settled once answered.
DEFAULT_COMPLETION_ESTIMATE = 256
# The longest the first queued attempt sleeps before asking again: budget returned by
# answers (estimates that overshot) and other processes' changes show up within this.
POLL = 0.25
_CHARS_PER_TOKEN = 4
_OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def estimate(body: Mapping[str, Any]) -> tuple[int, int]:
    """Prompt and completion tokens a request may use: its text at 4 characters a token, and
    its `max_tokens` (or Ollama's `num_predict`), else `DEFAULT_COMPLETION_ESTIMATE`."""
    chars = 0
    system = body.get("system")
    if isinstance(system, str):
        chars += len(system)
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict | Mapping) else None
        if isinstance(content, str):
            chars += len(content)
    options = body.get("options")
    limits = [body.get(name) for name in _OUTPUT_LIMITS]
    if isinstance(options, Mapping):
        limits.append(options.get("num_predict"))
    completion = next(
        (n for n in limits if isinstance(n, int) and not isinstance(n, bool) and n > 0),
        DEFAULT_COMPLETION_ESTIMATE,
    )
    return math.ceil(chars / _CHARS_PER_TOKEN) + 1, completion


def _costs(prompt: int, completion: int) -> dict[str, float]:
    return {
        "requests": 1.0,
        "tokens": float(prompt + completion),
        "input_tokens": float(prompt),
        "output_tokens": float(completion),
    }


class _Bounced(Exception):
    """An attempt reached its slot while the account's gate was closed: not sent."""


@dataclass(slots=True)
class _Ticket:
    """What the Budget stage took for the attempt in flight, for the Checkpoint to see: the
    estimate of its request `body`, made when first needed (an attempt let through knowing no
    limit may never need it), and the costs taken for it (none if `blind`)."""

    body: Mapping[str, Any]
    blind: bool
    sent_blind: bool = False  # passed the Checkpoint knowing no limit: counted in flight
    _estimate: tuple[int, int] | None = None
    _costs: dict[str, float] | None = None

    @property
    def estimate(self) -> tuple[int, int]:
        """The prompt and completion tokens the request may use (see `estimate`)."""
        if self._estimate is None:
            self._estimate = estimate(self.body)
        return self._estimate

    @property
    def costs(self) -> Mapping[str, float]:
        if self._costs is None:
            self._costs = _costs(*self.estimate)
        return self._costs


class AccountBudget:
    """One account's budget as this process's runtime loop sees it: the store that holds it,
    the queue of attempts waiting for it, and when the last pause it heard of ends."""

    def __init__(self, account: Account, store: Store) -> None:
        self.account = account
        self.key = account.key  # the store's name for it, made once
        self.store = store
        self.paused_until = -math.inf  # on the clock of the calls that heard of it
        self._queue: deque[tuple[AttemptState, asyncio.Future[bool]]] = deque()
        self._shortage: tuple[str | None, float] = (None, 0.0)  # what the first waits for
        # Attempts sent before any limit was known, still unanswered: nothing was taken for
        # them, so the first answers that teach a limit take it for them (see `_unseen`).
        self.blind_in_flight = 0

    def answered(self, ticket: _Ticket) -> int:
        """Note that `ticket`'s attempt is over; the blind attempts still in flight."""
        if ticket.sent_blind:
            ticket.sent_blind = False
            self.blind_in_flight -= 1
        return self.blind_in_flight

    def knows_nothing(self, limits: Mapping[str, Limit], clock: _clock.Clock) -> bool:
        """Whether a take would let an attempt through blind at once, without asking: no
        limit is configured (`limits`), the store is this process's, no attempt is queued,
        and the store knows no limit nor pause."""
        store = self.store
        return (
            not limits
            and isinstance(store, LocalStore)
            and not self._queue
            and store.knows_nothing(self.key, clock.monotonic())
        )

    def paused_for(self, clock: _clock.Clock) -> float:
        """Seconds left of the pause this process knows of (0 if none)."""
        return max(0.0, self.paused_until - clock.monotonic())

    async def acquire(
        self, costs: Mapping[str, float], limits: Mapping[str, Limit], attempt: AttemptState
    ) -> tuple[float, str | None, bool]:
        """Take `costs`, waiting as long as it takes; returns the wait, what was short, and
        whether the take was blind (no limit known yet).

        Raises AttemptFailed(RateLimitError) if the call's deadline comes first.
        """
        clock = attempt.clock
        started = clock.monotonic()
        grant = None
        if not self._queue:
            grant = await self.store.take(self.key, costs, limits, started)
            if grant.taken:
                return 0.0, None, grant.blind
        turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        entry = (attempt, turn)
        self._queue.append(entry)
        reason = None if grant is None else grant.reason
        try:
            if self._queue[0] is not entry:
                grant = None  # it was asked before others queued: ask again when first
                if not await turn:
                    short, wait = self._shortage
                    raise self._no_room(attempt, short, wait, at_least=True)
            while True:
                if grant is None:
                    grant = await self.store.take(self.key, costs, limits, clock.monotonic())
                if grant.taken:
                    return clock.monotonic() - started, reason, grant.blind
                reason = reason or grant.reason
                now = clock.monotonic()
                if grant.reason == "pause":
                    self.paused_until = max(self.paused_until, now + grant.wait)
                if grant.wait > attempt.time_left():
                    raise self._no_room(attempt, grant.reason, grant.wait)
                self._shortage = (grant.reason, grant.wait)
                self._turn_away_behind(grant.wait)
                await clock.sleep(min(grant.wait, POLL))
                grant = None
        finally:
            self._leave(entry)

    async def take_now(
        self, costs: Mapping[str, float], limits: Mapping[str, Limit], clock: _clock.Clock
    ) -> Grant:
        """Take without waiting or queueing (for an attempt that already queued once)."""
        return await self.store.take(self.key, costs, limits, clock.monotonic())

    def take_at_once(
        self, costs: Mapping[str, float], limits: Mapping[str, Limit], clock: _clock.Clock
    ) -> Grant | None:
        """`take_now` without an await, when the store is this process's; else None."""
        if not isinstance(self.store, LocalStore):
            return None
        return self.store.take_now(self.key, costs, limits, clock.monotonic())

    def _leave(self, entry: tuple[AttemptState, asyncio.Future[bool]]) -> None:
        # The first in the queue hands its turn on when it leaves, however it leaves
        # (budget taken, deadline, cancelled); one handed the turn and cancelled before it
        # ran is first by then, so it hands the turn on in its turn.
        first = bool(self._queue) and self._queue[0] is entry
        if entry in self._queue:
            self._queue.remove(entry)
        if first and self._queue:
            following = self._queue[0][1]
            if not following.done():
                following.set_result(True)

    def _turn_away_behind(self, wait: float) -> None:
        """Fail now every queued attempt whose deadline comes before `wait` is over: all of
        them wait at least as long as the first."""
        for entry in list(self._queue)[1:]:
            attempt, turn = entry
            if attempt.time_left() < wait and not turn.done():
                self._queue.remove(entry)
                turn.set_result(False)

    def _no_room(
        self, attempt: AttemptState, reason: str | None, wait: float, *, at_least: bool = False
    ) -> AttemptFailed:
        needs = f"{'at least ' if at_least else ''}{wait:.2f} s"
        error = RateLimitError(
            f"{self.account.name}: no rate-limit budget ({reason}) before the call's deadline "
            f"(it needs {needs}, {max(0.0, attempt.time_left()):.2f} s are left); not sent",
            retry_after=wait,
            provider=self.account.provider,
        )
        return AttemptFailed(error, retryable=False)

    async def settle(
        self, settlement: Settlement, limits: Mapping[str, Limit], clock: _clock.Clock
    ) -> None:
        now = clock.monotonic()
        if settlement.pause:
            self.paused_until = max(self.paused_until, now + settlement.pause)
        await self.store.settle(self.key, settlement, limits, now)


class _Budgets:
    """The runtime loop's budgets: the local store, one Redis store per URL, and the
    accounts in use (the least recently used forgotten past MAX_ACCOUNTS)."""

    def __init__(self) -> None:
        self.local = LocalStore()
        self.shared: dict[str, RedisStore] = {}
        self.accounts: OrderedDict[tuple[str, str | None], AccountBudget] = OrderedDict()

    def get(self, account: Account, shared: str | None) -> AccountBudget:
        key = (account.key, shared)
        budget = self.accounts.get(key)
        if budget is not None:
            self.accounts.move_to_end(key)
            return budget
        store: Store = self.local
        if shared is not None:
            store = self.shared.get(shared) or self.shared.setdefault(
                shared, RedisStore(shared, self.local)
            )
        budget = self.accounts[key] = AccountBudget(account, store)
        if len(self.accounts) > MAX_ACCOUNTS:
            self.accounts.popitem(last=False)
        return budget

    def forget(self, origin: str) -> None:
        for (key, _), budget in self.accounts.items():
            if budget.account.origin == origin:
                budget.paused_until = -math.inf
                self.local.forget(key)

    async def aclose(self) -> None:
        for store in self.shared.values():
            await store.aclose()


# The pid of the process whose runtime loop made budgets, if any did (see `forget`).
_made_in: int | None = None


def _budgets() -> _Budgets:
    global _made_in
    _made_in = os.getpid()
    return _runtime.loop_resource((__name__,), _Budgets, close=_Budgets.aclose)


def account_budget(account: Account, shared: str | None) -> AccountBudget:
    """The runtime loop's budget for `account` (kept in Redis at `shared`, if given)."""
    return _budgets().get(account, shared)


def forget(origin: str) -> None:
    """Forget the pauses and the limits this process learned for `origin` (as `Account`
    writes it: "http://127.0.0.1:8000"). The simulator's pytest fixture calls it between
    tests, so that one test's 429 does not pause the next one's calls."""

    if _made_in != os.getpid():
        return  # no call of this process has used a budget: nothing to forget

    async def forgetting() -> None:
        _budgets().forget(origin)

    _runtime.run(forgetting())


class Budget:
    """Take budget for each attempt of `account`'s calls, under `rate_limit`."""

    def __init__(self, account: Account, rate_limit: RateLimit) -> None:
        self.account = account
        self.rate_limit = rate_limit
        self.limits = rate_limit.limits()
        self.checkpoint = Checkpoint(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._budget: AccountBudget | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The budget belongs to one loop: copies find their own.
        return {"account": self.account, "rate_limit": self.rate_limit}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["account"], state["rate_limit"])  # type: ignore[misc]

    def budget(self) -> AccountBudget:
        loop = asyncio.get_running_loop()
        # Only the runtime loop's thread gets here; after a fork the new loop finds its own.
        if self._loop is not loop or self._budget is None:
            self._loop = loop
            self._budget = account_budget(self.account, self.rate_limit.shared)
        return self._budget

    async def __call__(self, call: Call, attempt: AttemptState, send: Handler) -> Reply:
        budget = self.budget()
        while True:
            ticket = _Ticket(call.request.body, blind=True)
            # Knowing no limit, a take would let the attempt through blind: no estimate needed.
            if not budget.knows_nothing(self.limits, attempt.clock):
                waited, reason, ticket.blind = await budget.acquire(
                    ticket.costs, self.limits, attempt
                )
                if waited > 0:  # a budget with room costs no record
                    attempt.record_wait("budget", waited, counted=True, reason=reason)
                    events.emit(
                        events.ThrottleEvent(
                            call.id,
                            call.provider,
                            call.model,
                            attempt.number,
                            budget.account.name,
                            waited,
                            reason or "budget",
                        )
                    )
            attempt.ticket = ticket  # for its Checkpoint (its own attempt's ticket, no other)
            try:
                reply = await send(call, attempt)
            except _Bounced:
                if not ticket.blind:
                    refunds = Settlement(refunds=ticket.costs)
                    await budget.settle(refunds, self.limits, attempt.clock)
                continue
            except AttemptFailed as failed:
                failure = _failed(failed, ticket, budget.answered(ticket))
                await budget.settle(failure, self.limits, attempt.clock)
                raise
            finally:
                attempt.ticket = None
                others = budget.answered(ticket)  # however the attempt ended
            settlement = _answered(reply, ticket, others)
            if settlement is not None:
                await budget.settle(settlement, self.limits, attempt.clock)
            return reply


def _unseen(ticket: _Ticket, others: int) -> dict[str, float]:
    """What a blind attempt's answer takes for the other blind attempts still in flight:
    the headers' `remaining` may not count them yet, and nothing was taken for them."""
    return {name: -cost * others for name, cost in ticket.costs.items()} if others else {}


def _answered(reply: Reply, ticket: _Ticket, others: int) -> Settlement | None:
    """What an answer settles; None when there is nothing to (no limit known nor learned)."""
    observed = observe(reply.headers) if reply.headers else {}
    if ticket.blind and not observed:
        return None
    usage = reply.usage
    refunds: dict[str, float] = _unseen(ticket, others) if ticket.blind else {}
    # A blind take took nothing to return; a server that reports no usage keeps the estimate.
    if usage.total_tokens and not ticket.blind:
        prompt, completion = ticket.estimate
        refunds = {
            "tokens": float(prompt + completion - usage.total_tokens),
            "input_tokens": float(prompt - usage.prompt_tokens),
            "output_tokens": float(completion - usage.completion_tokens),
        }
    return Settlement(refunds, observed)


def _failed(failed: AttemptFailed, ticket: _Ticket, others: int) -> Settlement:
    # The request counts against the limit (providers count rejected ones too); the tokens
    # of an unanswered request are returned.
    refunds: dict[str, float] = _unseen(ticket, others) if ticket.blind else {}
    if not ticket.blind:
        refunds = {name: cost for name, cost in ticket.costs.items() if name != "requests"}
    observed = observe(failed.headers)
    # A 429 speaks for the whole account when it says so, with the provider's rate-limit
    # headers (OpenAI's and Anthropic's always carry them), or when the account's limits are
    # known; a bare 429 from a server that sends none is one request's answer, retried alone.
    account_wide = bool(observed) or not ticket.blind
    pause = failed.server_wait if failed.error.status_code == 429 and account_wide else None
    return Settlement(refunds, observed, pause)


class Checkpoint:
    """After Slots: turn back an attempt (to wait at the Budget stage again, holding no slot)
    while its account's gate is closed, so none is sent into a pause; and take the budget now
    for one that passed the Budget stage blind, before any limit was known, since the
    answers it waited behind may have taught some."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def __call__(self, call: Call, attempt: AttemptState, send: Handler) -> Awaitable[Reply]:
        # A plain function unless it must await the store: the attempt in flight keeps no
        # frame of this stage.
        budget = self.budget.budget()
        if budget.paused_for(attempt.clock) > 0:
            raise _Bounced
        ticket = attempt.ticket
        if not isinstance(ticket, _Ticket) or not ticket.blind:
            return send(call, attempt)
        if budget.knows_nothing(self.budget.limits, attempt.clock):
            _passed(budget, ticket, BLIND)  # what a take would answer, without the estimate
            return send(call, attempt)
        grant = budget.take_at_once(ticket.costs, self.budget.limits, attempt.clock)
        if grant is None:
            return self._take_then_send(call, attempt, send, budget, ticket)
        _passed(budget, ticket, grant)
        return send(call, attempt)

    async def _take_then_send(
        self,
        call: Call,
        attempt: AttemptState,
        send: Handler,
        budget: AccountBudget,
        ticket: _Ticket,
    ) -> Reply:
        grant = await budget.take_now(ticket.costs, self.budget.limits, attempt.clock)
        _passed(budget, ticket, grant)
        return await send(call, attempt)


def _passed(budget: AccountBudget, ticket: _Ticket, grant: Grant) -> None:
    """A blind attempt's take at the Checkpoint: turned back if refused, else sent, blind
    still (and counted in flight as such) if no limit is known yet."""
    if not grant.taken:
        raise _Bounced
    ticket.blind = ticket.sent_blind = grant.blind
    budget.blind_in_flight += ticket.sent_blind
