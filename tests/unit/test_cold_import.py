"""The API function's cold start (bench/cold_import.py): importing `app` must not load SQLAlchemy, the
models or boto3's services: they load on the first request that needs them. Measured: a schema importing
the ledger for its event-type names made `import app` 5.35x `import boto3` (budget 3.5x); without it, 1.70x."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sqlalchemy", "psycopg", "chalicelib.db.models", "chalicelib.events.ledger")


def test_importing_the_api_loads_no_database_layer() -> None:
    code = f"import json, sys; import app; print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    env = {**os.environ, "YMERA_STAGE": "test"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
