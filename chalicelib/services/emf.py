"""CloudWatch Embedded Metric Format documents, written as one JSON line each.

In Lambda, a stdout line shaped like this becomes CloudWatch metrics without
an API call (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/
CloudWatch_Embedded_Metric_Format_Specification.html). Written by hand rather
than with powertools' Metrics because the metrics agent emits several
dimension sets per run and powertools' metric set is process-global (shared
with the consumer's own TaskCompleted/TaskFailed metrics).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: CloudWatch's limits for one EMF directive.
MAX_METRICS = 100
MAX_DIMENSIONS = 30
UNITS = frozenset({"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
                   "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
                   "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second",
                   "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second",
                   "Count/Second", "None"})

Writer = Callable[[str], None]


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    value: float


def document(namespace: str, dimensions: Mapping[str, str], metrics: Sequence[Metric],
             timestamp: datetime) -> dict[str, Any]:
    """One EMF document: every metric under one dimension set."""
    if not 0 < len(metrics) <= MAX_METRICS:
        raise ValueError(f"an EMF document carries 1..{MAX_METRICS} metrics, got {len(metrics)}")
    if len(dimensions) > MAX_DIMENSIONS:
        raise ValueError(f"an EMF dimension set has at most {MAX_DIMENSIONS} keys")
    for m in metrics:
        if m.unit not in UNITS:
            raise ValueError(f"metric {m.name}: unit {m.unit!r} is not a CloudWatch unit")
        if m.name in dimensions:
            raise ValueError(f"metric {m.name} clashes with a dimension of the same name")
    return {
        "_aws": {
            "Timestamp": int(timestamp.timestamp() * 1000),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [list(dimensions)],
                "Metrics": [{"Name": m.name, "Unit": m.unit} for m in metrics],
            }],
        },
        **dimensions,
        **{m.name: m.value for m in metrics},
    }


def stdout_writer(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def emit(documents: Sequence[dict[str, Any]], writer: Writer = stdout_writer) -> int:
    for doc in documents:
        writer(json.dumps(doc, separators=(",", ":"), default=str))
    return len(documents)
