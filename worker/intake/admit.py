"""Whether a delivery on a job's batches queue is a batch this node may run.

Pure checks over the delivery and the job: the node dead-letters what fails them, with the
returned reason, and never runs it.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from common.broker.base import Delivery
from common.errors import BatchfleetError
from common.messages import BatchMessage, JobConfig
from common.signing import verify_batch

log = logging.getLogger(__name__)


def admit(delivery: Delivery, job: JobConfig, key: bytes | None) -> BatchMessage | str:
    """The batch message, or the reason to dead-letter the delivery."""
    try:
        message = BatchMessage.model_validate_json(delivery.body)
    except ValidationError as exc:
        reason = f"unparseable batch message: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}"
        log.error("dead-lettering a message on %s: %s", delivery.queue, reason)
        return reason
    if message.job_id != job.job_id:
        reason = f"message for job {message.job_id} on {delivery.queue}"
        log.error("dead-lettering batch %d of %s: %s", message.batch_id, job.job_id, reason)
        return reason
    if delivery.attempt > job.settings.run_max_try:
        # a handed-back copy carries its earlier tries, which the queue's delivery limit cannot see
        return "delivery_limit"
    if key is not None:
        try:
            verify_batch(key, job.job_id, message)
        except BatchfleetError as exc:
            log.error("dead-lettering batch %d of %s: %s", message.batch_id, job.job_id, exc.line())
            return exc.line()
    return message
