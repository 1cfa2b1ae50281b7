"""The quality posterior: rating weights, time decay toward the prior, and the update (exact numbers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.agents import registry
from chalicelib.domain.quality import Posterior, decay, decay_factor, rating_weights, update
from chalicelib.errors import ValidationError

DAY = 24 * 3600.0
HALF_LIFE = 30 * DAY
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("rating", "weights"), [(1, (0.0, 1.0)), (2, (0.25, 0.75)), (3, (0.5, 0.5)),
                                                 (4, (0.75, 0.25)), (5, (1.0, 0.0))])
def test_a_rating_is_a_fractional_success(rating: int, weights: tuple[float, float]) -> None:
    assert rating_weights(rating) == weights


@pytest.mark.parametrize("rating", [0, 6, -1])
def test_ratings_outside_one_to_five_are_refused(rating: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 5"):
        rating_weights(rating)


def test_a_new_agent_counts_ratings_at_full_weight() -> None:
    # GIVEN the prior Beta(1, 1) and no previous update WHEN rated 5, 4 and 1
    after = update(Posterior(), [5, 4, 1], last_update=None, now=T0, half_life_seconds=HALF_LIFE)
    # THEN alpha = 1 + 1 + 0.75 + 0 and beta = 1 + 0 + 0.25 + 1
    assert (after.alpha, after.beta) == (2.75, 2.25)
    assert after.mean == pytest.approx(2.75 / 5)
    assert after.evidence == 3.0


def test_one_half_life_halves_the_evidence_before_new_ratings_are_added() -> None:
    before = Posterior(5.0, 3.0)  # 4 successes and 2 failures beyond the prior
    assert decay_factor(T0, T0 + timedelta(days=30), HALF_LIFE) == 0.5
    assert decay(before, 0.5) == Posterior(3.0, 2.0)
    after = update(before, [5], last_update=T0, now=T0 + timedelta(days=30), half_life_seconds=HALF_LIFE)
    assert (after.alpha, after.beta) == (4.0, 2.0)


def test_two_half_lives_quarter_the_evidence_and_long_silence_returns_to_the_prior() -> None:
    before = Posterior(9.0, 5.0)
    assert update(before, [], last_update=T0, now=T0 + timedelta(days=60),
                  half_life_seconds=HALF_LIFE) == Posterior(3.0, 2.0)
    forgotten = update(before, [], last_update=T0, now=T0 + timedelta(days=3000), half_life_seconds=HALF_LIFE)
    assert forgotten.mean == pytest.approx(0.5) and forgotten.evidence == pytest.approx(0.0, abs=1e-20)


def test_a_clock_that_went_backwards_does_not_inflate_evidence() -> None:
    assert decay_factor(T0, T0 - timedelta(hours=1), HALF_LIFE) == 1.0
    with pytest.raises(ValueError):
        decay_factor(T0, T0, 0)


def test_learning_input_is_checked() -> None:
    assert registry.validate_input("learning", {}) == {"feedback_ids": None}
    with pytest.raises(ValidationError) as err:
        registry.validate_input("learning", {"feedback_ids": ["not-a-uuid"], "extra": 1})
    locs = [e["loc"] for e in err.value.details["errors"]]
    assert ["input_data", "feedback_ids", "0"] in locs and ["input_data", "extra"] in locs
