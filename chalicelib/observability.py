"""The only Logger object. Tracer is not built here: the X-Ray SDK costs ~200 ms of cold start."""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="ymera")
