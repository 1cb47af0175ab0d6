"""Worker middleware: a message's tenant, request id, event id and trace become job context."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import dramatiq
import structlog
from dramatiq import Middleware
from dramatiq.broker import MessageProxy

from socialflow.lib import telemetry
from socialflow.lib.logging import bind_context, clear_context
from socialflow.lib.tracing import child_traceparent, current_traceparent, trace_id
from socialflow.workers.context import JobContext, current_job

log = structlog.get_logger("socialflow.worker")


class EventContext(Middleware):
    """Binds the event's context before an actor runs and clears it after.

    Listed first on the broker, so its `after_*` hooks run last: the Retries middleware has
    already decided whether the message is dead-lettered when this logs it.
    """

    def __init__(self) -> None:
        # The message's span, when tracing: begun and ended by the same worker thread.
        self._spans = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        options = message.options
        if telemetry.TRACING.on:  # the actor's span continues the trace of the event's cause
            span, token = telemetry.start_span(
                f"{message.actor_name} process",
                kind="consumer",
                parent=options.get("traceparent"),
                attributes={
                    "messaging.system": "dramatiq",
                    "messaging.destination.name": message.queue_name,
                    "messaging.message.id": message.message_id,
                    "messaging.operation.type": "process",
                },
            )
            self._spans.current = (span, token)
            traceparent = telemetry.traceparent_of(span)
        else:
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
        self._end_span(exception)
        self._clear()

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._end_span(None)
        self._clear()

    def _end_span(self, exception: BaseException | None) -> None:
        begun = getattr(self._spans, "current", None)
        if begun is not None:
            self._spans.current = None
            if isinstance(exception, dramatiq.errors.Retry):  # asked to run later: no error
                begun[0].set_attribute("socialflow.retry_later", True)
                exception = None
            telemetry.end_span(*begun, error=exception)

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


class OneStopSignal(Middleware):
    """A worker process stops once when its stop signal reaches it twice at once (SIGTERM, or
    SIGHUP when a terminal closes).

    Signalled as a process group (systemd's KillMode=control-group, `kill -- -PGID`, a
    supervisor stopping a tree), each worker process gets SIGTERM, then Dramatiq's main process
    forwards it again. Dramatiq takes a second SIGTERM as "kill now" and raises SystemExit in
    the middle of stopping: its threads were never stopped, so the process waited for them
    forever. A repeat within DUPLICATE_S is the same stop and is ignored; a later one still
    kills, at once (os._exit: nothing waits on threads; messages in flight go back to the
    queue with the worker's heartbeat, as after any kill).
    """

    DUPLICATE_S = 5.0

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        first: list[float] = []  # when the first stop signal (of either kind) came
        for signum in (signal.SIGTERM, signal.SIGHUP):  # SIGHUP: a terminal closed
            dramatiqs = signal.getsignal(signum)
            if callable(dramatiqs):
                signal.signal(signum, self._once(dramatiqs, first))

    def _once(self, dramatiqs: Any, first: list[float]) -> Any:
        def on_stop(signum: int, frame: Any) -> None:
            now = time.monotonic()
            if not first:
                first.append(now)
                dramatiqs(signum, frame)  # stop: finish the messages in flight
            elif now - first[0] >= self.DUPLICATE_S:
                os._exit(1)  # Dramatiq's RET_KILLED

        return on_stop
