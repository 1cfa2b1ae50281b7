"""The Postgres triggers that write the event ledger (migration 0012_event_ledger installs them; docs/events.md).

Why triggers, and why statement-level ones with transition tables:
- Same transaction as the change, whatever code path made it (API, consumer, reaper, workflow control, an
  operator's UPDATE): no path can forget to write its event, and a rolled-back change writes none.
- One trigger call per statement, not per row: a batch claim that moves 10 tasks bumps each user's counter once
  and inserts its 10 events in one INSERT ... SELECT.
- Gap-free ids per user: the statement upserts `event_counters` (INSERT ... ON CONFLICT DO UPDATE ... RETURNING)
  for every user it touches, in user_id order (so two statements touching the same users cannot deadlock on
  each other's counter rows), and numbers the events `last_event_id - n + row_number()`. The counter row stays
  locked until commit, so a second transaction of the same user waits and numbers after the first: ids commit
  in order, which is what lets the notifier keep a single cursor per user.
- `pg_notify('ymera_events', '<user_id>,<user_id>,...')` is delivered at commit (never for a rollback), at most
  NOTIFY_USERS_PER_MESSAGE users a message (a NOTIFY payload must stay under 8000 bytes).

Only rows whose status changed write an event (an UPDATE that only moves a lease or a heartbeat writes none);
an INSERT counts as a change, except a run step inserted `pending` (a run inserts all its steps pending at
start; its run.status_changed event already says it started). A step entering `waiting_approval` writes
run.approval_requested after its run.step_changed.

This module is plain SQL text so the migration can import it without the ORM, and tests can read what runs.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The LISTEN/NOTIFY channel the notifier listens on (payload: comma-separated user ids).
NOTIFY_CHANNEL = "ymera_events"
#: 100 uuids and commas: 3.7 kB, well under NOTIFY's 8000-byte payload limit.
NOTIFY_USERS_PER_MESSAGE = 100

# The shared body: `changed` is the trigger's own SELECT over its transition tables (columns: user_id, type,
# resource_type, resource_id, run_id, step_id, status, payload, ord). Events of one statement are numbered in
# (resource_id, step_id, ord) order, so a step's step_changed comes before its approval_requested.
_BODY = """
DECLARE
    touched uuid[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
        RETURN NULL;  -- a statement-level trigger fires for an UPDATE that matched nothing, too
    END IF;
    WITH changed AS ({changed}),
    numbered AS (
        SELECT c.*, row_number() OVER (PARTITION BY c.user_id ORDER BY c.resource_id, c.step_id, c.ord) AS rn,
               count(*) OVER (PARTITION BY c.user_id) AS n
        FROM changed c),
    bumped AS (
        INSERT INTO event_counters AS ec (user_id, last_event_id, delivered_event_id, updated_at)
        SELECT user_id, count(*), 0, statement_timestamp() FROM changed GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE
            SET last_event_id = ec.last_event_id + EXCLUDED.last_event_id, updated_at = EXCLUDED.updated_at
        RETURNING ec.user_id, ec.last_event_id),
    written AS (
        INSERT INTO events (user_id, event_id, type, resource_type, resource_id, run_id, step_id, status,
                            occurred_at, payload)
        SELECT nb.user_id, b.last_event_id - nb.n + nb.rn, nb.type, nb.resource_type, nb.resource_id, nb.run_id,
               nb.step_id, nb.status, statement_timestamp(), nb.payload
        FROM numbered nb JOIN bumped b ON b.user_id = nb.user_id
        RETURNING user_id)
    SELECT array_agg(DISTINCT user_id ORDER BY user_id) INTO touched FROM written;
    IF touched IS NOT NULL THEN
        FOR i IN 0 .. (array_length(touched, 1) - 1) / {per_message} LOOP
            PERFORM pg_notify('{channel}', array_to_string(
                touched[i * {per_message} + 1 : (i + 1) * {per_message}], ','));
        END LOOP;
    END IF;
    RETURN NULL;
END
"""

_TASK_COLUMNS = """
    n.user_id, 'task.status_changed'::varchar AS type, 'task'::varchar AS resource_type, n.id AS resource_id,
    n.run_id, n.step_id, n.status::varchar AS status,
    jsonb_strip_nulls(jsonb_build_object('agent_type', n.agent_type, 'agent_id', n.agent_id, 'title', n.title,
                                         'previous_status', {previous}, 'error_code', n.error ->> 'code')) AS payload,
    0 AS ord"""

_RUN_COLUMNS = """
    n.user_id, 'run.status_changed'::varchar AS type, 'run'::varchar AS resource_type, n.id AS resource_id,
    n.id AS run_id, NULL::varchar AS step_id, n.status::varchar AS status,
    jsonb_strip_nulls(jsonb_build_object('workflow_id', n.workflow_id, 'previous_status', {previous},
                                         'error_code', n.error ->> 'code')) AS payload,
    0 AS ord"""

# A step has no user_id of its own: its run's. `k.ord` 0 is run.step_changed, 1 run.approval_requested.
_STEP_SELECT = """
    SELECT r.user_id, k.type, 'step'::varchar AS resource_type, n.run_id AS resource_id, n.run_id,
           n.step_id::varchar AS step_id, n.status::varchar AS status,
           jsonb_strip_nulls(jsonb_build_object('workflow_id', r.workflow_id, 'task_id', n.task_id,
                                                'previous_status', {previous},
                                                'error_code', n.error ->> 'code')) AS payload,
           k.ord
    FROM {rows}
    JOIN workflow_runs r ON r.id = n.run_id
    CROSS JOIN LATERAL (VALUES ('run.step_changed'::varchar, 0), ('run.approval_requested'::varchar, 1)) AS k(type, ord)
    WHERE {where} AND (k.ord = 0 OR n.status = 'waiting_approval')"""


@dataclass(frozen=True)
class Trigger:
    """One statement-level trigger and the function it runs."""

    name: str
    table: str
    event: str  # INSERT | UPDATE
    changed: str  # the SELECT over the transition table(s)

    @property
    def referencing(self) -> str:
        return "NEW TABLE AS new_rows" if self.event == "INSERT" else "OLD TABLE AS old_rows NEW TABLE AS new_rows"

    def create_sql(self) -> list[str]:
        body = _BODY.format(changed=self.changed, channel=NOTIFY_CHANNEL, per_message=NOTIFY_USERS_PER_MESSAGE)
        return [
            f"CREATE OR REPLACE FUNCTION {self.name}() RETURNS trigger LANGUAGE plpgsql AS $fn${body}$fn$",
            f"CREATE TRIGGER {self.name} AFTER {self.event} ON {self.table} REFERENCING {self.referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {self.name}()",
        ]

    def drop_sql(self) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {self.name} ON {self.table}", f"DROP FUNCTION IF EXISTS {self.name}()"]


_UPDATED = "new_rows n JOIN old_rows o ON {join}"

TRIGGERS: tuple[Trigger, ...] = (
    Trigger("ymera_events_tasks_insert", "tasks", "INSERT",
            f"SELECT {_TASK_COLUMNS.format(previous='NULL::varchar')} FROM new_rows n"),
    Trigger("ymera_events_tasks_update", "tasks", "UPDATE",
            f"SELECT {_TASK_COLUMNS.format(previous='o.status')} "
            f"FROM {_UPDATED.format(join='o.id = n.id')} WHERE n.status IS DISTINCT FROM o.status"),
    Trigger("ymera_events_runs_insert", "workflow_runs", "INSERT",
            f"SELECT {_RUN_COLUMNS.format(previous='NULL::varchar')} FROM new_rows n"),
    Trigger("ymera_events_runs_update", "workflow_runs", "UPDATE",
            f"SELECT {_RUN_COLUMNS.format(previous='o.status')} "
            f"FROM {_UPDATED.format(join='o.id = n.id')} WHERE n.status IS DISTINCT FROM o.status"),
    Trigger("ymera_events_steps_insert", "workflow_run_steps", "INSERT",
            _STEP_SELECT.format(previous="NULL::varchar", rows="new_rows n", where="n.status <> 'pending'")),
    Trigger("ymera_events_steps_update", "workflow_run_steps", "UPDATE",
            _STEP_SELECT.format(previous="o.status",
                                rows=_UPDATED.format(join="o.run_id = n.run_id AND o.step_id = n.step_id"),
                                where="n.status IS DISTINCT FROM o.status")),
)


def create_statements() -> list[str]:
    return [sql for trigger in TRIGGERS for sql in trigger.create_sql()]


def drop_statements() -> list[str]:
    return [sql for trigger in reversed(TRIGGERS) for sql in trigger.drop_sql()]
