"""`CeleryQueue`: the API's JobQueue (server/job_queue.py) on the Celery broker.

server never imports workers; `descent serve` hands this in (create_app(job_queue=...)).
"""

from __future__ import annotations

from jobs.store.models import Queue
from workers.celery_app import app
from workers.tasks import publish

READY_TIMEOUT_SECONDS = 2.0


class CeleryQueue:
    def publish(self, job_id: str, queue: Queue, priority: int) -> None:
        publish(job_id, queue.value, priority)

    def ready(self) -> bool:
        try:
            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=READY_TIMEOUT_SECONDS)
        except Exception:
            return False
        return True
