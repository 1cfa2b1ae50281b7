"""An example external agent: a self-hosted `examination` worker that counts what is in the source.

It answers with lines, words and the most frequent identifiers of `input_data.source`, using
nothing but the standard library. Create the agent once (the key is shown only then):

    curl -X POST $URL/agents -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
         -d '{"name": "my-counter", "type": "examination", "mode": "external"}'

then run:

    YMERA_URL=http://127.0.0.1:8000 YMERA_AGENT_ID=<id> YMERA_AGENT_KEY=<api_key> \\
        python clients/python/example_worker.py

Tasks sent to that agent (or to the `examination` type, when routing picks it) are handled here.
Ctrl-C or SIGTERM finishes the task in hand and exits.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ymera_worker import Result, TaskFailed, Worker  # noqa: E402 - after the path set-up above

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def count(task: dict[str, Any]) -> Result:
    source = task["input_data"].get("source")
    if not isinstance(source, str) or not source.strip():
        raise TaskFailed("EMPTY_SOURCE", "input_data.source has nothing to count")
    words = source.split()
    identifiers = collections.Counter(IDENTIFIER.findall(source))
    lines = source.splitlines()
    output = {
        "lines": len(lines),
        "blank_lines": sum(1 for line in lines if not line.strip()),
        "words": len(words),
        "characters": len(source),
        "top_identifiers": [{"name": name, "count": n} for name, n in identifiers.most_common(5)],
        "longest_line": max((len(line) for line in lines), default=0),
    }
    return Result(output=output, metrics={"words": len(words)})


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=os.environ.get("YMERA_URL", "http://127.0.0.1:8000"))
    p.add_argument("--agent-id", default=os.environ.get("YMERA_AGENT_ID"))
    p.add_argument("--api-key", default=os.environ.get("YMERA_AGENT_KEY"))
    p.add_argument("--max-tasks", type=int, default=1, help="tasks per lease (1..10)")
    args = p.parse_args(argv)
    if not args.agent_id or not args.api_key:
        p.error("--agent-id and --api-key (or YMERA_AGENT_ID / YMERA_AGENT_KEY) are required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = Worker(args.url, args.agent_id, args.api_key, max_tasks=args.max_tasks)

    def stop(signum: int, _frame: Any) -> None:
        worker.stop()  # finish the task in hand; the current poll ends within its wait
        signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C exits at once

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    handled = worker.run(count)
    logging.getLogger("example_worker").info("stopped after %d task(s)", handled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
