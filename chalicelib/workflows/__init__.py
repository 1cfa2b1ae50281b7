"""The workflow engine: pipelines of agent, engine and approval steps, run on Step Functions.

- `definition`  the request model of a workflow (steps, references, conditions, fan-out, gates);
- `validate`    every violation of a definition at once (graph, references, inputs), for the 422;
- `refs`        the reference syntax (`$.input…`, `$.steps.<id>.output…`, `$.item…`) and `when` conditions;
- `asl`         the definition compiled to Amazon States Language, with queue placeholders;
- `messages`    what the state machines put on the queues and what the consumers answer;
- `steps`       agent steps at run time: token message -> task, and the task's end -> the token's answer;
- `control`     the control queue: approvals, for_each fan-outs, engine steps, run reports;
- `reconcile`   runs whose execution ended while a report was lost, repaired from the execution
                (runtime helpers: `runstate`, `scope`, `batch`; docs/workflows-runtime.md).

Postgres holds runs and steps (what the API shows); Step Functions sequences them. See docs/workflows.md.
"""
