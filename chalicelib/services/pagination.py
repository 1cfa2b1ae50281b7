"""Opaque keyset cursors over (created_at, id), newest first."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ColumnElement, tuple_

from chalicelib.errors import ValidationError


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps({"c": created_at.isoformat(), "i": str(row_id)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("c"), str) or not isinstance(data.get("i"), str):
            raise ValueError("a cursor is {c: timestamp, i: id}, both strings")
        created = datetime.fromisoformat(data["c"])
        if created.tzinfo is None:
            raise ValueError("naive cursor timestamp")
        created.astimezone(timezone.utc)  # OverflowError near datetime.min/max
        return created, uuid.UUID(data["i"])
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError, binascii.Error) as exc:
        raise ValidationError("invalid cursor", {"field": "cursor"}) from exc


def after_cursor(created_col: Any, id_col: Any, cursor: str) -> ColumnElement[bool]:
    """Rows after the cursor, newest first, as a row-value comparison: `(created_at, id) < (x, y)` is an index
    range condition on an index ending in (created_at, id), so every page is a range scan that reads only
    its own rows. (The equivalent `created_at < x OR (created_at = x AND id < y)` is applied as a filter after
    the scan: a mid-list page of a 100,000-row user read 50,001 rows.)"""
    created, row_id = decode_cursor(cursor)
    return tuple_(created_col, id_col) < tuple_(created, row_id)
