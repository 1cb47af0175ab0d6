"""Worker middleware: a message's tenant, request id, event id and trace become job context."""

from __future__ import annotations

from typing import Any

import dramatiq
import structlog
from dramatiq import Middleware
from dramatiq.broker import MessageProxy

from socialflow.lib.logging import bind_context, clear_context
from socialflow.lib.tracing import child_traceparent, current_traceparent, trace_id
from socialflow.workers.context import JobContext, current_job

log = structlog.get_logger("socialflow.worker")


class EventContext(Middleware):
    """Binds the event's context before an actor runs and clears it after.

    Listed first on the broker, so its `after_*` hooks run last: the Retries middleware has
    already decided whether the message is dead-lettered when this logs it.
    """

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        options = message.options
        traceparent = child_traceparent(options.get("traceparent"))
        job = JobContext(
            event_id=message.message_id,
            actor=message.actor_name,
            tenant=options.get("tenant"),
            request_id=options.get("request_id"),
        )
        current_job.set(job)
        current_traceparent.set(traceparent)
        clear_context()
        arg = message.args[0] if message.args else None
        headers = arg.get("headers") if isinstance(arg, dict) else None
        bind_context(
            event_id=job.event_id,
            job=job.actor,
            # Who caused the event: events this job emits carry the same cause.
            actor=headers.get("actor") if isinstance(headers, dict) else None,
            tenant=job.tenant,
            request_id=job.request_id,
            trace_id=trace_id(traceparent),
        )

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is not None and message.failed:
            log.error(
                "actor.dead_lettered",
                retries=message.options.get("retries", 0),
                error_type=type(exception).__name__,
                error=str(exception),
            )
        self._clear()

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._clear()

    @staticmethod
    def _clear() -> None:
        current_job.set(None)
        current_traceparent.set(None)
        clear_context()


class WorkerResourcesLifecycle(Middleware):
    """Closes the worker process's resources (its database pool) while its event loop still runs."""

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # After-hooks run in reverse: this one runs after the worker threads are joined and
        # before the AsyncIO middleware stops the event loop.
        from dramatiq.asyncio import get_event_loop_thread

        from socialflow.workers.actors import WorkerResources

        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            loop_thread.run_coroutine(WorkerResources.dispose())
