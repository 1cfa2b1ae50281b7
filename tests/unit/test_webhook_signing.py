"""Webhook signatures agree with the Standard Webhooks specification's published test vector, both as the
sender makes them and as the docs' verification snippet checks them."""

from __future__ import annotations

import base64

import pytest

from chalicelib.webhooks import signing
from chalicelib.webhooks.sender import _retry_after
from tests.integration.webhook_support import docs_verify

# The specification's test vector (also in the Svix and standardwebhooks libraries' tests).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_sender_signs_the_specifications_vector() -> None:
    assert signing.sign(SECRET, MSG_ID, TIMESTAMP, BODY) == SIGNATURE
    assert signing.headers(SECRET, MSG_ID, TIMESTAMP, BODY) == {
        "webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP), "webhook-signature": SIGNATURE}


def test_the_docs_snippet_accepts_the_vector_and_rejects_tampering() -> None:
    verify = docs_verify()
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP), "webhook-signature": SIGNATURE}
    assert verify(SECRET, headers, BODY, tolerance=10**10) == {"test": 2432232314}
    # several signatures (a receiver mid-rotation): one valid v1 is enough
    assert verify(SECRET, {**headers, "webhook-signature": "v1,AAAA " + SIGNATURE}, BODY, tolerance=10**10)
    for bad in ({**headers, "webhook-id": "msg_other"}, {**headers, "webhook-timestamp": str(TIMESTAMP + 1)},
                {**headers, "webhook-signature": "v2," + SIGNATURE[3:]}):
        with pytest.raises(ValueError):
            verify(SECRET, bad, BODY, tolerance=10**10)
    with pytest.raises(ValueError, match="too far"):
        verify(SECRET, headers, BODY)  # 2021: outside the default 5 minutes


def test_new_secrets_are_whsec_and_32_random_bytes() -> None:
    a, b = signing.new_secret(), signing.new_secret()
    assert a.startswith("whsec_") and a != b
    assert len(base64.b64decode(a.removeprefix("whsec_"))) == 32


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("", None), ("120", 120.0), (" 7 ", 7.0), ("soon", None), ("-5", None),
    ("Thu, 01 Jan 1970 00:02:00 GMT", 60.0),  # an HTTP date: seconds from "now" (60 s here)
])
def test_retry_after_reads_seconds_and_http_dates(header: str | None, expected: float | None) -> None:
    assert _retry_after(header, now=60.0) == expected
