"""The judge engine: sends judge requests through a backend, once each, within a budget, and keeps every
answer.

``run_requests`` takes any sequence of ``JudgeRequest`` and returns one ``JudgeReply`` per request, in input
order, with the run's accounting (``JudgeRun``). The rules, and why:

- Identical requests (same ``JudgeRequest.key``) are sent once and share the reply; requests whose key is
  in the cache are not sent at all. A paid answer is never paid again.
- Every answer is written to the cache by the thread that received it, the moment it arrives (the cache
  fsyncs each line), so a crash or an interrupt loses no paid answer: a re-run sends only the rest.
- At most ``concurrency`` requests are in flight (a thread pool). A backend with ``complete_many`` (the
  in-process ``LocalBackend``) is instead called in the calling thread, in batches, so the model runs
  batched forward passes and is never used by two threads.
- ``RetryableError`` (timeouts, connection errors, HTTP 429 and 5xx) is retried up to ``max_attempts``
  attempts in all, waiting ``min(backoff_max, backoff_base * 2**attempt) * rng.random()`` (exponential
  backoff with full jitter, so clients that failed together do not retry together) and at least the server's
  ``Retry-After`` when it sent one. After the last attempt the reply is an error reply ("http 429 after 5
  attempts"): counted by reason, never cached, never a score. ``FatalError`` is not retried.
- A ``Budget`` caps tokens and/or cost. Before a request is sent its worst case is reserved (the backend's
  ``prompt_token_bound`` when it has one, else ``count_tokens`` of the messages, plus ``max_tokens``); the
  real usage replaces the reservation when the answer arrives, and a failed request releases it. When the
  next request does not fit even with nothing in flight, sending stops: the remaining requests get
  ``error="budget"`` replies and ``JudgeRun`` says how many were left unsent. An attempt that failed
  after the server may have run it (``BackendError.possibly_billed``: a read timeout, a connection broken
  mid-response, a 200 response that cannot be read) is charged at its reserved worst case, since the
  provider's bill holds it although the engine never saw its usage, and a retry reserves its worst case
  anew; when that does not fit, the request fails without a retry. So what the provider bills never exceeds
  the budget as long as the servers bill no more than the bound (true of ``OpenAIBackend``'s bound for
  byte-level tokenizers) and no more than ``max_tokens`` of completion. ``Budget.max_requests`` caps the HTTP
  requests themselves: every attempt, retries included, takes one, and none is given back, so the requests a
  server receives from one run never exceed it.
- A failed request keeps what the server sent back on its last attempt (``JudgeReply.raw``: the error body,
  the body that was not JSON, the completion without choices), so no reply is ever dropped unseen.
- ``estimate`` is the dry run: what a run would send and cost at worst, sending nothing.

``judge_pool`` applies a ``JudgeTemplate`` to a pool: build the requests of every row, run them, parse every
reply, combine each row's values, and report every row's status; nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from instsel_assets.judge.backends import Backend, FatalError, RetryableError, messages_text
from instsel_assets.judge.types import JudgeReply, JudgeRequest, JudgeTemplate, ReplyParseError

_log = logging.getLogger(__name__)

BUDGET_ERROR = "budget"
JUDGE_STATUSES = ("ok", "unparsable", "failed", "budget", "not_judgeable")
_FAILURES_LOGGED_PER_REASON = 5


# ------------------------------------------------------------------------------------------------ budget
@dataclass(frozen=True)
class Price:
    """Price of one model in currency units per million tokens."""

    input_per_million: float
    output_per_million: float

    def __post_init__(self) -> None:
        for name in ("input_per_million", "output_per_million"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Price.{name} must be a finite number >= 0, got {value!r}")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million) / 1e6


@dataclass(frozen=True)
class Budget:
    """Caps of one run: ``max_tokens`` (prompt + completion tokens of the requests sent), ``max_cost`` (in
    the currency of ``prices``), ``max_requests`` (HTTP requests, i.e. attempts: every retry counts, failed or
    not). ``prices`` maps model names to ``Price``; the backend's model must have one when ``max_cost`` is
    set, and with one the run reports its cost even without a cap."""

    max_tokens: int | None = None
    max_cost: float | None = None
    prices: Mapping[str, Price] = field(default_factory=dict)
    max_requests: int | None = None

    def __post_init__(self) -> None:
        if self.max_requests is not None and (isinstance(self.max_requests, bool)
                                              or not isinstance(self.max_requests, int) or self.max_requests < 0):
            raise ValueError(f"Budget.max_requests must be an integer >= 0 or None, got {self.max_requests!r}")
        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int)
                                            or self.max_tokens < 0):
            raise ValueError(f"Budget.max_tokens must be an integer >= 0 or None, got {self.max_tokens!r}")
        if self.max_cost is not None and (not isinstance(self.max_cost, (int, float)) or isinstance(self.max_cost, bool)
                                          or not math.isfinite(self.max_cost) or self.max_cost < 0):
            raise ValueError(f"Budget.max_cost must be a finite number >= 0 or None, got {self.max_cost!r}")
        for model, price in self.prices.items():
            if not isinstance(price, Price):
                raise ValueError(f"Budget.prices[{model!r}] must be a Price, got {type(price).__name__}")


class _Ledger:
    """Reserved and spent tokens / cost of one run; thread-safe (a worker re-reserves before a retry)."""

    def __init__(self, budget: Budget | None, price: Price | None) -> None:
        self._lock = threading.Lock()
        self.max_tokens = budget.max_tokens if budget is not None else None
        self.max_cost = budget.max_cost if budget is not None else None
        self.max_requests = budget.max_requests if budget is not None else None
        self.requests = 0  # attempts started (each takes one request of max_requests; never given back)
        self.price = price
        self.spent_tokens = 0
        self.spent_cost = 0.0
        self.reserved_tokens = 0
        self.reserved_cost = 0.0
        self.overruns = 0
        self.unseen_tokens = 0  # worst cases charged for attempts that may have been billed unseen
        self.unseen_cost = 0.0

    @property
    def limited(self) -> bool:
        return self.max_tokens is not None or self.max_cost is not None or self.max_requests is not None

    def take_request(self) -> bool:
        """One more attempt (HTTP request); False when ``max_requests`` are all taken."""
        with self._lock:
            if self.max_requests is not None and self.requests >= self.max_requests:
                return False
            self.requests += 1
        return True

    def _cost(self, prompt: int, completion: int) -> float:
        return self.price.cost(prompt, completion) if self.price is not None else 0.0

    def reserve(self, prompt_bound: int, max_completion: int) -> tuple[int, int, float] | None:
        tokens = prompt_bound + max_completion
        cost = self._cost(prompt_bound, max_completion)
        with self._lock:
            if self.max_tokens is not None and self.spent_tokens + self.reserved_tokens + tokens > self.max_tokens:
                return None
            if self.max_cost is not None and self.spent_cost + self.reserved_cost + cost > self.max_cost:
                return None
            if self.max_requests is not None and self.requests >= self.max_requests:
                return None
            self.requests += 1  # the reservation's attempt
            self.reserved_tokens += tokens
            self.reserved_cost += cost
        return prompt_bound, max_completion, cost

    def _release(self, reservation: tuple[int, int, float]) -> None:
        self.reserved_tokens -= reservation[0] + reservation[1]
        self.reserved_cost -= reservation[2]

    def release(self, reservation: tuple[int, int, float]) -> None:
        with self._lock:
            self._release(reservation)

    def charge_worst_case(self, reservation: tuple[int, int, float]) -> None:
        """An attempt that may have been billed without an answer: its reservation becomes spent."""
        with self._lock:
            self._release(reservation)
            tokens = reservation[0] + reservation[1]
            self.spent_tokens += tokens
            self.spent_cost += reservation[2]
            self.unseen_tokens += tokens
            self.unseen_cost += reservation[2]

    def settle(self, reservation: tuple[int, int, float], prompt: int, completion: int) -> bool:
        """Replace a reservation by the real usage; False when the usage exceeded the reservation."""
        over = prompt > reservation[0] or completion > reservation[1]
        with self._lock:
            self._release(reservation)
            self.spent_tokens += prompt + completion
            self.spent_cost += self._cost(prompt, completion)
            self.overruns += int(over and self.limited)
        return not over


# ------------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class Estimate:
    """The dry run of ``run_requests`` (``estimate``): nothing is sent.

    ``prompt_tokens`` is ``backend.count_tokens`` over the messages of the requests that would be sent
    (unique and not cached); ``max_completion_tokens`` the sum of their ``max_tokens``; ``max_cost`` the
    price of both at the backend's model (None without a price)."""

    backend_id: str
    model: str
    requests: int
    unique: int
    cached: int
    to_send: int
    prompt_tokens: int
    max_completion_tokens: int
    max_cost: float | None

    @property
    def max_tokens(self) -> int:
        return self.prompt_tokens + self.max_completion_tokens

    def summary(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["max_tokens"] = self.max_tokens
        return out


@dataclass
class JudgeRun:
    """What ``run_requests`` did. ``replies[i]`` answers ``requests[i]``.

    ``requested`` = requests given; ``unique`` = distinct keys; ``cache_hits`` = distinct keys answered from
    the cache; ``sent`` = distinct keys sent (retries not counted again); ``succeeded`` + sum of ``failed``
    (by reason: "http 429", "timeout", "invalid response", ...) = ``sent``; ``left_unsent`` = distinct keys
    the budget stopped (their replies have ``error="budget"``); ``cache_hits + sent + left_unsent =
    unique``. ``possibly_billed`` counts attempts that failed after the server may have run them (a read
    timeout, a broken or unreadable response: see ``BackendError.possibly_billed``); ``retries_refused``
    the requests whose retry did not fit the budget (they fail). ``prompt_tokens`` / ``completion_tokens`` / ``cost`` are what this run's answers used (cost
    None without a price for the model); ``retries`` counts repeated attempts. ``budget`` (None without
    one): the caps, ``spent_tokens``, ``spent_cost`` (answers' usage plus the worst cases charged for
    possibly-billed attempts, of which ``charged_unseen_tokens`` / ``charged_unseen_cost``) and
    ``over_reservation`` (answers that used more than their reserved worst case; 0 unless a server bills
    beyond the backend's bound), ``max_requests`` and ``requests`` (attempts started, retries included).
    """

    replies: list[JudgeReply]
    backend_id: str
    model: str
    requested: int
    unique: int
    cache_hits: int
    sent: int
    succeeded: int
    failed: dict[str, int]
    retries: int
    prompt_tokens: int
    completion_tokens: int
    cost: float | None
    stopped_by_budget: bool
    left_unsent: int
    seconds: float
    budget: dict[str, Any] | None = None
    possibly_billed: int = 0
    retries_refused: int = 0

    @property
    def n_failed(self) -> int:
        return int(sum(self.failed.values()))

    def summary(self) -> dict[str, Any]:
        """Plain JSON-able numbers for asset metadata (no request text, no secrets)."""
        return {
            "backend_id": self.backend_id, "model": self.model, "requested": self.requested, "unique": self.unique,
            "cache_hits": self.cache_hits, "sent": self.sent, "succeeded": self.succeeded,
            "failed": dict(sorted(self.failed.items())), "n_failed": self.n_failed, "retries": self.retries,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cost": None if self.cost is None else round(self.cost, 6), "stopped_by_budget": self.stopped_by_budget,
            "left_unsent": self.left_unsent, "possibly_billed": self.possibly_billed,
            "retries_refused": self.retries_refused, "seconds": round(self.seconds, 3), "budget": self.budget,
        }


@dataclass
class _Outcome:
    key: str
    reply: JudgeReply
    reason: str | None  # None: an answer
    retries: int = 0
    reservation: tuple[int, int, float] | None = None  # the last attempt's, still held (None: charged)
    possibly_billed: int = 0  # attempts that may have been billed without an answer
    retry_refused: bool = False


def _error_reason(error: str) -> str:
    """The counting category of an error text ("http 429 after 5 attempts" -> "http 429")."""
    head = error.partition(": ")[0]
    return head.partition(" after ")[0]


def _say(logger: Any, level: str, message: str) -> None:
    """Log a pre-formatted message on a ``logging.Logger`` or any object with ``info`` / ``warning``
    methods (e.g. Dagster's ``context.log``)."""
    getattr(logger, level)(message)


# ------------------------------------------------------------------------------------------------ dry run
def _price_for(prices: Mapping[str, Price] | None, model: str) -> Price | None:
    return None if prices is None else prices.get(model)


def _unique(requests: Sequence[JudgeRequest], backend: Backend) -> tuple[list[str], dict[str, JudgeRequest],
                                                                         dict[str, int]]:
    keys: list[str] = []
    unique: dict[str, JudgeRequest] = {}
    first: dict[str, int] = {}
    for i, request in enumerate(requests):
        if not isinstance(request, JudgeRequest):
            raise TypeError(f"request {i} is a {type(request).__name__}, not a JudgeRequest")
        key = request.key(backend.backend_id, backend.model)
        keys.append(key)
        if key not in unique:
            unique[key] = request
            first[key] = i
    return keys, unique, first


def estimate(requests: Sequence[JudgeRequest], backend: Backend, cache=None,
             prices: Mapping[str, Price] | None = None) -> Estimate:
    """What ``run_requests(requests, backend, cache=cache)`` would send, at most (``Estimate``); sends
    nothing and counts no cache hits."""
    keys, unique, _ = _unique(requests, backend)
    cached = cache.present(unique) if cache is not None else set()
    to_send = [k for k in unique if k not in cached]
    prompt = sum(int(backend.count_tokens(messages_text(unique[k]))) for k in to_send)
    completion = sum(int(unique[k].max_tokens) for k in to_send)
    price = _price_for(prices, backend.model)
    return Estimate(backend_id=backend.backend_id, model=backend.model, requests=len(keys), unique=len(unique),
                    cached=len(cached), to_send=len(to_send), prompt_tokens=prompt, max_completion_tokens=completion,
                    max_cost=None if price is None else price.cost(prompt, completion))


# ------------------------------------------------------------------------------------------------ the run
def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def run_requests(requests: Sequence[JudgeRequest], backend: Backend, *, cache=None, concurrency: int = 4,
                 max_attempts: int = 5, backoff_base: float = 1.0, backoff_max: float = 60.0,
                 budget: Budget | None = None, progress: Callable[[int, int], None] | None = None,
                 log: Any = None, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> JudgeRun:
    """Answer ``requests`` through ``backend`` (module docstring for the rules).

    ``cache``: a ``JudgeCache`` (or None); ``progress(done, total)`` is called with ``total`` = the distinct
    requests to send, once before the first and after each one finishes (an exception from it stops the
    run; answers already received are in the cache); ``log``: a logger or Dagster's ``context.log``
    (default: this module's logger); ``sleep`` and ``rng``: the wait between attempts and the jitter source
    (injectable for tests; with the default ``time.sleep`` the waits end early when the run is aborted).
    """
    concurrency = _check_int("concurrency", concurrency, 1)
    max_attempts = _check_int("max_attempts", max_attempts, 1)
    if not backoff_base >= 0 or not backoff_max >= 0:
        raise ValueError(f"backoff_base and backoff_max must be >= 0, got {backoff_base!r}, {backoff_max!r}")
    price = _price_for(budget.prices if budget is not None else None, backend.model)
    if budget is not None and budget.max_cost is not None and price is None:
        raise ValueError(f"Budget.max_cost is set but Budget.prices has no Price for model {backend.model!r} "
                         f"(prices for: {sorted(budget.prices)})")
    run = _Run(backend, cache=cache, ledger=_Ledger(budget, price), max_attempts=max_attempts,
               backoff_base=backoff_base, backoff_max=backoff_max, progress=progress,
               logger=log if log is not None else _log, sleep=sleep,
               rng=rng if rng is not None else random.Random())
    return run.execute(requests, concurrency, budget, price)


class _Run:
    """The state of one ``run_requests`` call: results by key, counters, the budget ledger."""

    def __init__(self, backend: Backend, *, cache, ledger: _Ledger, max_attempts: int, backoff_base: float,
                 backoff_max: float, progress: Callable[[int, int], None] | None, logger: Any,
                 sleep: Callable[[float], None], rng: random.Random) -> None:
        self.backend = backend
        self.cache = cache
        self.ledger = ledger
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.progress = progress
        self.logger = logger
        self.sleep = sleep
        self.rng = rng
        self.abort = threading.Event()
        self.unique: dict[str, JudgeRequest] = {}
        self.first: dict[str, int] = {}
        self.results: dict[str, JudgeReply] = {}
        self.failed: Counter[str] = Counter()
        self.sent = self.succeeded = self.retries = self.prompt_tokens = self.completion_tokens = 0
        self.possibly_billed = self.retries_refused = 0
        self.done = self.total = 0

    # ------------------------------------------------------------------------------------------ driver
    def execute(self, requests: Sequence[JudgeRequest], concurrency: int, budget: Budget | None,
                price: Price | None) -> JudgeRun:
        started = time.perf_counter()
        keys, self.unique, self.first = _unique(requests, self.backend)
        if self.cache is not None:
            self.results.update(self.cache.lookup(list(self.unique)))
        cache_hits = len(self.results)
        to_send = [k for k in self.unique if k not in self.results]
        self.total = len(to_send)
        if self.progress is not None:
            self.progress(0, self.total)
        if getattr(self.backend, "complete_many", None) is not None:
            left = self._send_batched(deque(to_send))
        else:
            left = self._send_threaded(deque(to_send), concurrency)
        for key in left:
            self.results[key] = JudgeReply(text=None, error=BUDGET_ERROR)
        ledger = self.ledger
        if left:
            _say(self.logger, "warning",
                 f"judge: budget reached after {self.sent} requests to {self.backend.backend_id} "
                 f"({ledger.spent_tokens} tokens, cost {ledger.spent_cost:.6g}, {ledger.requests} HTTP requests; caps: "
                 f"max_tokens={ledger.max_tokens}, max_cost={ledger.max_cost}, max_requests={ledger.max_requests}); "
                 f"{len(left)} distinct requests left unsent")
        run = JudgeRun(
            replies=[self.results[k] for k in keys], backend_id=self.backend.backend_id, model=self.backend.model,
            requested=len(keys), unique=len(self.unique), cache_hits=cache_hits, sent=self.sent,
            succeeded=self.succeeded, failed=dict(self.failed), retries=self.retries,
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
            cost=None if price is None else price.cost(self.prompt_tokens, self.completion_tokens),
            stopped_by_budget=bool(left), left_unsent=len(left), seconds=time.perf_counter() - started,
            budget=None if budget is None else {
                "max_tokens": budget.max_tokens, "max_cost": budget.max_cost, "spent_tokens": ledger.spent_tokens,
                "spent_cost": None if price is None else round(ledger.spent_cost, 6),
                "charged_unseen_tokens": ledger.unseen_tokens,
                "charged_unseen_cost": None if price is None else round(ledger.unseen_cost, 6),
                "over_reservation": ledger.overruns, "max_requests": budget.max_requests,
                "requests": ledger.requests},
            possibly_billed=self.possibly_billed, retries_refused=self.retries_refused,
        )
        reasons = f" {dict(sorted(self.failed.items()))}" if self.failed else ""
        _say(self.logger, "info",
             f"judge: {run.requested} requests to {run.backend_id} ({run.unique} distinct): {run.cache_hits} from "
             f"the cache, {run.sent} sent, {run.succeeded} answered, {run.n_failed} failed{reasons}, "
             f"{run.left_unsent} left by the budget, {run.retries} retries, "
             f"{run.prompt_tokens}+{run.completion_tokens} tokens in {run.seconds:.1f} s")
        return run

    def _reserve(self, key: str) -> tuple[int, int, float] | None:
        """Reserve the worst case of one request; None when it does not fit the budget now."""
        request = self.unique[key]
        bound = 0
        if self.ledger.limited:
            by_backend = getattr(self.backend, "prompt_token_bound", None)
            bound = int(by_backend(request)) if by_backend is not None else int(
                self.backend.count_tokens(messages_text(request)))
        return self.ledger.reserve(bound, int(request.max_tokens))

    def _send_batched(self, pending: deque[str]) -> list[str]:
        """``complete_many`` in the calling thread, ``4 * batch_size`` requests a call; returns the keys the
        budget left unsent."""
        chunk_size = 4 * max(1, int(getattr(self.backend, "batch_size", 8)))
        while pending:
            chunk: list[tuple[str, tuple[int, int, float]]] = []
            while pending and len(chunk) < chunk_size:
                reservation = self._reserve(pending[0])
                if reservation is None:
                    break
                chunk.append((pending.popleft(), reservation))
            if not chunk:  # nothing reserved and nothing in flight: the next request cannot fit
                break
            self.sent += len(chunk)
            replies = self.backend.complete_many([self.unique[k] for k, _ in chunk])
            if len(replies) != len(chunk):
                raise RuntimeError(f"{self.backend.backend_id}: complete_many returned {len(replies)} replies for "
                                   f"{len(chunk)} requests")
            for (key, reservation), reply in zip(chunk, replies):
                outcome = self._finish(key, reply, 0)
                outcome.reservation = reservation
                self._record(outcome)
        return list(pending)

    def _send_threaded(self, pending: deque[str], concurrency: int) -> list[str]:
        """``complete`` on a pool of ``concurrency`` threads; returns the keys the budget left unsent."""
        in_flight: dict[Future[_Outcome], tuple[str, tuple[int, int, float]]] = {}
        executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="judge")
        completed = False
        stopped = False
        try:
            while True:
                while pending and not stopped and len(in_flight) < concurrency:
                    reservation = self._reserve(pending[0])
                    if reservation is None:
                        stopped = not in_flight  # with answers in flight, wait: their reservations come back
                        break
                    key = pending.popleft()
                    self.sent += 1
                    in_flight[executor.submit(self._attempts, key, reservation)] = key
                if not in_flight:
                    break
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    in_flight.pop(future)
                    self._record(future.result())
            completed = True
        finally:
            if not completed:
                self.abort.set()  # no new attempts; answers already in flight still reach the cache
            executor.shutdown(wait=True, cancel_futures=True)
        return list(pending)

    # ------------------------------------------------------------------------------------------ one request
    def _pause(self, seconds: float) -> None:
        if self.sleep is time.sleep:
            self.abort.wait(seconds)
        else:
            self.sleep(seconds)

    def _attempts(self, key: str, reservation: tuple[int, int, float]) -> _Outcome:
        """Send one request until it is answered, fails for good, or runs out of attempts (worker thread).
        ``reservation`` is the first attempt's; an attempt that may have been billed is charged at it, and a
        retry reserves anew (the outcome carries the reservation still held, or None)."""
        request = self.unique[key]
        retries = billed = 0
        held: tuple[int, int, float] | None = reservation
        last: RetryableError | None = None
        last_raw: str | None = None  # what the server sent back on the last attempt, kept with a failure

        def outcome(error: str, reason: str, refused: bool = False) -> _Outcome:
            return _Outcome(key, JudgeReply(text=None, error=error, raw=last_raw), reason, retries, held, billed,
                            refused)

        for attempt in range(self.max_attempts):
            if self.abort.is_set():
                return outcome("aborted", "aborted")
            if attempt > 0:
                # A retry is one more HTTP request (max_requests); when the previous attempt was charged, it
                # also needs its own worst case (reserving it takes the request too).
                if held is None:
                    held = self._reserve(key)
                    fits = held is not None
                else:
                    fits = self.ledger.take_request()
                if not fits:
                    reason = last.reason if last is not None else "budget"
                    tries = f"{attempt} attempt" + ("s" if attempt != 1 else "")
                    return outcome(f"{reason} after {tries}; the budget cannot cover a retry", reason, refused=True)
                retries += 1  # counted when made: sent + retries = the HTTP requests of the run
            try:
                reply = self.backend.complete(request)
            except (RetryableError, FatalError) as exc:
                last_raw = exc.raw
                if exc.possibly_billed:
                    billed += 1
                    if self.ledger.limited:
                        self.ledger.charge_worst_case(held)
                        held = None
                if isinstance(exc, FatalError):
                    return outcome(str(exc), exc.reason)
                last = exc
                if attempt + 1 >= self.max_attempts:
                    return outcome(f"{exc.reason} after {self.max_attempts} attempts", exc.reason)
                wait_s = min(self.backoff_max, self.backoff_base * 2 ** attempt) * self.rng.random()
                if exc.retry_after_seconds is not None:
                    wait_s = max(wait_s, float(exc.retry_after_seconds))
                _say(self.logger, "info", f"judge: request {self.first[key]} ({key[:12]}): {exc}; attempt "
                                          f"{attempt + 1} of {self.max_attempts}, retrying in {wait_s:.2f} s")
                self._pause(wait_s)
                continue
            done = self._finish(key, reply, retries)
            done.reservation, done.possibly_billed = held, billed
            return done
        raise AssertionError("unreachable: the loop returns on its last attempt")

    def _finish(self, key: str, reply: JudgeReply, retries: int) -> _Outcome:
        """An answer is cached at once, by the thread that received it; a reply without text is a failure."""
        if reply.error is not None or reply.text is None:
            error = reply.error or "no text in the reply"
            return _Outcome(key, JudgeReply(text=None, error=error), _error_reason(error), retries)
        if reply.cached:
            reply = dataclasses.replace(reply, cached=False)
        if self.cache is not None:
            self.cache.add(key, reply, model=self.backend.model, backend_id=self.backend.backend_id)
        return _Outcome(key, reply, None, retries)

    def _record(self, outcome: _Outcome) -> None:
        """Count an outcome and settle its reservation (calling thread), then report progress."""
        self.results[outcome.key] = outcome.reply
        self.retries += outcome.retries
        self.possibly_billed += outcome.possibly_billed
        self.retries_refused += int(outcome.retry_refused)
        reservation = outcome.reservation
        if outcome.reason is None:
            reply = outcome.reply
            self.succeeded += 1
            self.prompt_tokens += reply.prompt_tokens
            self.completion_tokens += reply.completion_tokens
            if reservation is None:
                raise AssertionError("an answer without a held reservation")
            within = self.ledger.settle(reservation, reply.prompt_tokens, reply.completion_tokens)
            if self.ledger.limited and not within:
                _say(self.logger, "warning",
                     f"judge: request {self.first[outcome.key]} used {reply.prompt_tokens} prompt + "
                     f"{reply.completion_tokens} completion tokens, more than its reserved worst case "
                     f"{reservation[0]} + {reservation[1]}; the budget may be exceeded")
        else:
            if reservation is not None:
                self.ledger.release(reservation)
            self.failed[outcome.reason] += 1
            level = "warning" if self.failed[outcome.reason] <= _FAILURES_LOGGED_PER_REASON else "debug"
            _say(self.logger, level, f"judge: request {self.first[outcome.key]} ({outcome.key[:12]}) to "
                                     f"{self.backend.backend_id} failed: {outcome.reply.error}")
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


# ------------------------------------------------------------------------------------------------ pool
def cap_reply_tokens(requests: Sequence[JudgeRequest], max_reply_tokens: int | None) -> list[JudgeRequest]:
    """``requests`` with ``max_tokens`` lowered to ``max_reply_tokens`` where it is higher (None: unchanged). The
    cap is part of the payload, hence of the cache key: answers obtained under another cap are not reused."""
    if max_reply_tokens is None:
        return list(requests)
    if isinstance(max_reply_tokens, bool) or not isinstance(max_reply_tokens, int) or max_reply_tokens < 1:
        raise ValueError(f"max_reply_tokens must be a positive integer or None, got {max_reply_tokens!r}")
    return [r if r.max_tokens <= max_reply_tokens else dataclasses.replace(r, max_tokens=max_reply_tokens)
            for r in requests]


def judge_pool(pool: pd.DataFrame, template: JudgeTemplate, backend: Backend, *, max_reply_tokens: int | None = None,
               **run_kwargs: Any) -> pd.DataFrame:
    """One row per pool row (same order): ``id``, the template's ``columns``, ``judge_status``,
    ``judge_error`` and ``judge_raw``.

    Each row's requests come from ``template.build(row)`` (``row``: the pool row as a dict). Status, in this
    order: "not_judgeable" (no requests), "failed" (a request got no answer: HTTP error, invalid response,
    ...), "budget" (a request was left unsent by the budget), "unparsable" (a reply raised
    ``ReplyParseError`` in ``template.parse``, or the values did in ``template.validate`` against the row or in
    ``template.combine``), else "ok" with the
    columns from ``template.combine``. The columns of every other row are None/NaN. ``judge_error`` says why
    a row is not "ok" (the error or the parser's message); ``judge_raw`` is the JSON list of the row's raw
    replies, kept for every row: the reply text of an answer, for a failed request what the server sent back
    on its last attempt (``JudgeReply.raw``: an error body, a body that is not JSON, ...), null where nothing
    came back (a timeout, a broken connection, the budget).

    ``out.attrs``: ``template``, ``n_ok``, ``n_unparsable``, ``n_failed``, ``n_budget``, ``n_not_judgeable``
    (summing to ``len(pool)``), ``n_unparsable_replies``, and ``judge_run`` (``JudgeRun.summary()``).
    ``max_reply_tokens`` caps every request's ``max_tokens`` (``cap_reply_tokens``); ``run_kwargs`` go to
    ``run_requests``.
    """
    if "id" not in pool.columns:
        raise ValueError(f"judge_pool ({template.name}): the pool needs an 'id' column; it has {list(pool.columns)}")
    clashes = [c for c in template.columns if c in ("id", "judge_status", "judge_error", "judge_raw")]
    if clashes or len(set(template.columns)) != len(template.columns):
        raise ValueError(f"template {template.name!r}: columns {list(template.columns)} repeat a name or use one "
                         f"judge_pool writes itself ({clashes})")
    logger = run_kwargs.get("log") or _log
    rows = pool.to_dict("records")
    row_requests: list[list[JudgeRequest]] = []
    for row in rows:
        try:
            built = list(template.build(row))
        except Exception as exc:
            raise ValueError(f"template {template.name!r}: building the requests of row {row['id']!r} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
        for request in built:
            if not isinstance(request, JudgeRequest):
                raise TypeError(f"template {template.name!r}: build() of row {row['id']!r} returned a "
                                f"{type(request).__name__}, not a JudgeRequest")
        row_requests.append(cap_reply_tokens(built, max_reply_tokens))
    flat = [r for built in row_requests for r in built]
    run = run_requests(flat, backend, **run_kwargs)

    values: dict[str, list[Any]] = {c: [] for c in template.columns}
    status: list[str] = []
    errors: list[str | None] = []
    raw: list[str] = []
    n_unparsable_replies = 0
    at = 0
    for row, built in zip(rows, row_requests):
        replies = run.replies[at: at + len(built)]
        at += len(built)
        raw.append(json.dumps([r.text if r.text is not None else r.raw for r in replies], ensure_ascii=False))
        row_status, row_error, combined, bad_replies = _judge_row(template, row, replies)
        n_unparsable_replies += bad_replies
        status.append(row_status)
        errors.append(row_error)
        for column in template.columns:
            values[column].append(combined[column] if combined is not None else None)

    out = pd.DataFrame({"id": pool["id"].to_numpy(), **values, "judge_status": status, "judge_error": errors,
                        "judge_raw": raw})
    counts = Counter(status)
    out.attrs = {"template": template.name, **{f"n_{s}": int(counts.get(s, 0)) for s in JUDGE_STATUSES},
                 "n_unparsable_replies": int(n_unparsable_replies), "judge_run": run.summary()}
    for bad in ("unparsable", "failed", "budget"):
        if counts.get(bad):
            examples = ", ".join(repr(i) for i, s in zip(out["id"], status) if s == bad)
            examples = examples if len(examples) < 200 else examples[:200] + "..."
            _say(logger, "warning", f"judge {template.name}: {counts[bad]} of {len(out)} rows are {bad} "
                                    f"(e.g. {examples})")
    return out


def _judge_row(template: JudgeTemplate, row: Mapping[str, Any], replies: Sequence[JudgeReply]
               ) -> tuple[str, str | None, dict[str, Any] | None, int]:
    """``(status, error, columns, unparsable replies)`` of one row (``judge_pool``'s rules)."""
    row_id = row["id"]
    if not replies:
        return "not_judgeable", "the template built no request for this row", None, 0
    errors = [r.error for r in replies if r.error is not None]
    hard = [e for e in errors if e != BUDGET_ERROR]
    if hard:
        return "failed", "; ".join(hard), None, 0
    if errors:
        return "budget", BUDGET_ERROR, None, 0
    parsed: list[Any] = []
    problems: list[str] = []
    for i, reply in enumerate(replies):
        try:
            parsed.append(template.parse(reply.text or ""))
        except ReplyParseError as exc:
            problems.append(f"reply {i}: {exc}")
    if problems:
        return "unparsable", "; ".join(problems), None, len(problems)
    if template.validate is not None:
        try:
            template.validate(row, parsed)
        except ReplyParseError as exc:
            return "unparsable", f"validate: {exc}", None, len(parsed)
    try:
        combined = template.combine(parsed)
    except ReplyParseError as exc:
        return "unparsable", f"combine: {exc}", None, 0
    except Exception as exc:
        raise ValueError(f"template {template.name!r}: combine() failed on row {row_id!r}: "
                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(combined, Mapping) or set(combined) != set(template.columns):
        got = sorted(combined) if isinstance(combined, Mapping) else type(combined).__name__
        raise ValueError(f"template {template.name!r}: combine() on row {row_id!r} returned {got}, expected "
                         f"exactly the columns {list(template.columns)}")
    return "ok", None, dict(combined), 0
