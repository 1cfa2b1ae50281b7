"""Starting executions: a version's state machine created lazily at its first run, then StartExecution.

A version's ASL is stored with `${AgentQueueUrl:<type>}` / `${ControlQueueUrl}` placeholders (no account ids
in what GET /workflows/{id} shows); here they become the real queue URLs and the machine is created as
`<queue_prefix>-wf-<version_id.hex>` with the workflow role. Its ARN is kept on the version, so later runs
of that version make one Step Functions call (StartExecution) and no SQS lookups.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import update

from chalicelib.db.session import Database
from chalicelib.db.workflow_models import WorkflowVersion
from chalicelib.errors import DependencyUnavailableError
from chalicelib.messaging.sqs import queue_name
from chalicelib.observability import logger
from chalicelib.workflows.definition import WorkflowDefinition
from chalicelib.workflows.messages import ERROR_RUN_CANCELLED, ExecutionInput
from chalicelib.workflows.ports import StateMachines

#: a queue's URL by its full name (QueueClient.url_of: looked up once per container).
QueueUrl = Callable[[str], str]


def state_machine_name(queue_prefix: str, version_id: uuid.UUID) -> str:
    return f"{queue_prefix}-wf-{version_id.hex}"


def execution_name(run_id: uuid.UUID, execution: int) -> str:
    return f"{run_id.hex}-{execution}"


class Launcher:
    def __init__(self, db: Database, state_machines: StateMachines, queue_url: QueueUrl, *, queue_prefix: str,
                 control_queue_suffix: str, role_arn: str) -> None:
        self.db = db
        self.state_machines = state_machines
        self.queue_url = queue_url
        self.queue_prefix = queue_prefix
        self.control_queue_suffix = control_queue_suffix
        self.role_arn = role_arn

    @property
    def control_queue_name(self) -> str:
        return f"{self.queue_prefix}-{self.control_queue_suffix}"

    def start(self, run_id: uuid.UUID, version_id: uuid.UUID, execution: int) -> str:
        """The new execution's ARN. Raises whatever the endpoints raise (the caller fails the run)."""
        arn = self.state_machine(version_id)
        return self.state_machines.start_execution(
            arn, execution_name(run_id, execution),
            ExecutionInput(run_id=run_id, execution=execution).model_dump(mode="json"))

    def state_machine(self, version_id: uuid.UUID) -> str:
        from chalicelib.workflows import asl

        with self.db.read() as session:
            version = session.get(WorkflowVersion, version_id)
            assert version is not None
            if version.state_machine_arn:
                return version.state_machine_arn
            definition = WorkflowDefinition.model_validate(version.definition)
            placeholders, step_types = dict(version.asl), dict(version.step_agent_types or {})
        if not self.role_arn:
            raise DependencyUnavailableError("workflows are not set up on this stage (no workflow role)",
                                             {"dependency": "stepfunctions", "setting": "YMERA_WORKFLOW_ROLE_ARN"})
        types = sorted({str(s.agent_type or step_types[s.step_id]) for s in definition.steps
                        if s.type == "task" and s.engine is None})
        rendered = asl.render(placeholders, agent_queue_urls={t: self.queue_url(queue_name(self.queue_prefix, t))
                                                              for t in types},
                              control_queue_url=self.queue_url(self.control_queue_name))
        arn = self.state_machines.ensure_state_machine(state_machine_name(self.queue_prefix, version_id), rendered,
                                                       self.role_arn)
        with self.db.transaction() as session:
            session.execute(update(WorkflowVersion).where(WorkflowVersion.id == version_id)
                            .values(state_machine_arn=arn).execution_options(synchronize_session=False))
        return arn

    def redrive(self, execution_arn: str) -> bool:
        return self.state_machines.redrive_execution(execution_arn)

    def stop(self, execution_arn: str) -> None:
        """Best effort: Postgres already says `cancelled` and every consumer short-circuits on it (and moto keeps
        a stopped execution RUNNING anyway)."""
        try:
            self.state_machines.stop_execution(execution_arn, ERROR_RUN_CANCELLED, "the run was cancelled")
        except Exception:  # noqa: BLE001 - the run is cancelled in Postgres whatever Step Functions says
            logger.warning("StopExecution failed; the run stays cancelled", extra={"execution_arn": execution_arn},
                           exc_info=True)

    @staticmethod
    def unavailable(exc: BaseException) -> DependencyUnavailableError | None:
        from chalicelib.messaging.states import unavailable_error

        return unavailable_error(exc, "stepfunctions")
