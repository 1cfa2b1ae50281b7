"""Sign-in throttling that slows guessing without locking the owner out.

Two budgets of *failed* password checks, keyed on the resolved account (its id:
username and email share one budget; a name that matches no account is keyed
on the hashed name, so a 429 says nothing about whether an account exists):

- `login-account-ip`, per (account, client address): when empty, that address
  is refused for that account (429) before any bcrypt runs.
- `login-account`, per account, from every address: when empty the account is
  under a distributed guess; each address then loses its whole per-account
  budget on its next failure (one guess per address per refill period).

A correct password is refused only when its own address is out of budget, and
clears that address's failures. Both login and the current-password check of
`PUT /users/{id}/password` spend these budgets. Redis unreachable: refused
(503), like the `login-ip` bucket in the middleware — guessing must not get
free while Redis is down. `limiter` None (rate limiting off, or development
without Redis): no throttling.

Cost: one script call before the password check and one command after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.errors import DependencyUnavailableError, RateLimitedError
from chalicelib.ratelimit import Buckets, Level, LimiterUnavailable, RateLimiter, Spend


@dataclass
class Attempt:
    throttle: LoginThrottle
    account: str
    ip: str
    #: the account-wide budget was empty when this attempt began.
    under_attack: bool = False

    def failed(self) -> None:
        t = self.throttle
        if t.limiter is None:
            return
        per_ip = t.buckets.login_account_ip
        cost = per_ip.capacity if self.under_attack else 1
        t._call([Spend(t.buckets.login_account, self.account, 1),
                 Spend(per_ip, f"{self.account}:{self.ip}", cost)])

    def succeeded(self) -> None:
        """The owner is back: this address's failures against the account are forgotten (best effort)."""
        t = self.throttle
        if t.limiter is not None:
            t.limiter.refill(t.buckets.login_account_ip, f"{self.account}:{self.ip}")


class LoginThrottle:
    def __init__(self, limiter: RateLimiter | None, buckets: Buckets) -> None:
        self.limiter = limiter
        self.buckets = buckets

    def begin(self, account: str, client_ip: str | None) -> Attempt:
        """Before the password check: raises RateLimitedError when this address is out of budget for the account."""
        attempt = Attempt(self, account, client_ip or "unknown")
        if self.limiter is None:
            return attempt
        per_ip = self.buckets.login_account_ip
        # A look, not a spend: only failures cost (after the password check).
        allowed, (ip_level, account_level) = self._call(
            [Spend(per_ip, f"{account}:{attempt.ip}", cost=0, need=1), Spend(self.buckets.login_account, account, 0)])
        if not allowed:
            raise RateLimitedError("too many failed sign-in attempts from this address; retry later",
                                   ip_level.retry_after, {"bucket": per_ip.name,
                                                          "retry_after_seconds": ip_level.retry_after})
        attempt.under_attack = account_level.tokens < 1
        return attempt

    def _call(self, spends: list[Spend]) -> tuple[bool, list[Level]]:
        assert self.limiter is not None
        try:
            return self.limiter.spend(spends)
        except LimiterUnavailable as exc:
            raise DependencyUnavailableError("sign-in is temporarily unavailable; try again shortly",
                                             {"dependency": "rate_limiter"}) from exc
