"""The Celery app, configured from Settings: `celery -A workers.celery_app worker`.

The broker is `settings.broker_url` (Redis for a deployment) or, when that is unset, an
embedded transport that needs no server. Measured on the 2-core development machine
(kombu 5.7, one consumer, one message every 130 ms, publish-to-delivery):

    filesystem:// (polling every 0.1 s)   p50   58 ms, p90  99 ms, max  100 ms
    sqla+sqlite:// (polling every 1 s)    p50  531 ms, p90 948 ms, max 1003 ms

The SQLAlchemy transport passes every transport option to `create_engine`, so its 1 s
polling interval cannot be shortened; the filesystem transport it is, under
<data_dir>/broker. Neither embedded transport returns a message that a SIGKILLed worker
had taken (the file or row is gone once delivered), and neither honours priorities:
the store's reaper re-publishes what a dead worker held (workers/reaper.py).

Each job runs in a child process that its task supervises (workers/tasks.py), so a
worker's pool only waits: the threads pool, one thread a concurrent job. It also lets
the task see the worker's warm shutdown (the `worker_shutting_down` signal fires in
the worker's own process) and hand its job back.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from jobs.settings import Settings, get_settings
from jobs.store.models import Queue as JobQueueName

BROKER_DIR = "broker"
EMBEDDED_BROKER = "filesystem://"
EMBEDDED_POLLING_SECONDS = 0.1
# Redis hands an unacknowledged message to another consumer after this long; with
# acks_late a running job's message stays unacknowledged, so it must outlast any lease
# by far (a redelivery to a live lease is only dropped, but costs a claim).
MIN_VISIBILITY_TIMEOUT_SECONDS = 3600


def broker_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The broker URL and its transport options for `settings`."""
    if settings.broker_url:
        visibility = max(MIN_VISIBILITY_TIMEOUT_SECONDS, 10 * settings.lease_seconds)
        return settings.broker_url, {"visibility_timeout": visibility}
    folder = settings.data_dir / BROKER_DIR
    messages, processed, control = folder / "messages", folder / "processed", folder / "control"
    for path in (messages, processed, control):
        path.mkdir(parents=True, exist_ok=True)
    return EMBEDDED_BROKER, {
        # producers and consumers meet in one folder
        "data_folder_in": str(messages),
        "data_folder_out": str(messages),
        "processed_folder": str(processed),
        "store_processed": False,
        # the exchange-to-queue table; kombu's default is ./control, in the working dir
        "control_folder": str(control),
        "polling_interval": EMBEDDED_POLLING_SECONDS,
    }


def make_app(settings: Settings) -> Celery:
    broker, transport_options = broker_options(settings)
    app = Celery("descent", broker=broker, include=["workers.tasks"])
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(q.value, Exchange(q.value), routing_key=q.value) for q in JobQueueName],
        task_default_queue=JobQueueName.cpu.value,
        # the job row is the truth and a task returns nothing: no result backend
        task_ignore_result=True,
        # a message is acknowledged when its task ends, so one whose worker dies comes
        # back (Redis); a worker takes one job at a time per slot, leaving the rest queued
        # for other workers
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        # the embedded transport has no fanout for broadcasts; nothing here uses them
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    return app


app = make_app(get_settings())
