"""An agent's result quality as a Beta posterior with exponential forgetting. Pure: no I/O.

Each rating r in 1..5 is a fractional Bernoulli observation: success weight
(r-1)/4 and failure weight 1-(r-1)/4 (5 stars = one success, 1 star = one
failure, 3 stars = half of each). Evidence fades: before new evidence is added,
alpha and beta decay toward the uniform prior Beta(1, 1) by
0.5 ** (elapsed / half_life), so an agent's estimate follows how it behaves
now rather than how it behaved a year ago, and an agent nobody rated for a
long time returns to "unknown" (mean 0.5, little evidence).

The platform's router reads the posterior (mean, and alpha + beta as the
amount of evidence); `chalicelib.agents.learning` writes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

PRIOR_ALPHA = 1.0
PRIOR_BETA = 1.0
MIN_RATING = 1
MAX_RATING = 5


@dataclass(frozen=True)
class Posterior:
    alpha: float = PRIOR_ALPHA
    beta: float = PRIOR_BETA

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def evidence(self) -> float:
        """Observations (decayed) beyond the prior: 0 for a new agent."""
        return self.alpha + self.beta - PRIOR_ALPHA - PRIOR_BETA

    def as_dict(self) -> dict[str, float]:
        return {"mean": round(self.mean, 6), "alpha": round(self.alpha, 6), "beta": round(self.beta, 6),
                "evidence": round(self.evidence, 6)}


def rating_weights(rating: int) -> tuple[float, float]:
    """(success, failure) weights of one rating; they always sum to 1."""
    if not MIN_RATING <= rating <= MAX_RATING:
        raise ValueError(f"rating must be between {MIN_RATING} and {MAX_RATING}, got {rating}")
    success = (rating - MIN_RATING) / (MAX_RATING - MIN_RATING)
    return success, 1.0 - success


def decay_factor(last_update: datetime | None, now: datetime, half_life_seconds: float) -> float:
    """0.5 ** (elapsed / half_life); 1 when there was no update before (nothing to forget) or time went back."""
    if half_life_seconds <= 0:
        raise ValueError("half_life_seconds must be positive")
    if last_update is None:
        return 1.0
    elapsed = (now - last_update).total_seconds()
    return 0.5 ** (elapsed / half_life_seconds) if elapsed > 0 else 1.0


def decay(posterior: Posterior, factor: float) -> Posterior:
    return Posterior(PRIOR_ALPHA + (posterior.alpha - PRIOR_ALPHA) * factor,
                     PRIOR_BETA + (posterior.beta - PRIOR_BETA) * factor)


def update(posterior: Posterior, ratings: Iterable[int], *, last_update: datetime | None, now: datetime,
           half_life_seconds: float) -> Posterior:
    """Decay what is known since `last_update`, then add the new ratings at full weight."""
    current = decay(posterior, decay_factor(last_update, now, half_life_seconds))
    alpha, beta = current.alpha, current.beta
    for rating in ratings:
        success, failure = rating_weights(rating)
        alpha += success
        beta += failure
    return Posterior(alpha, beta)
