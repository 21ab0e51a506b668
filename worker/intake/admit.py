"""Whether a delivery on a job's batches queue is a batch this node may run.

Pure checks over the delivery and the job: the node dead-letters what fails them, with the
returned reason, and never runs it. Bodies and headers come from anyone who can publish.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from common.broker.base import PRIOR_TRIES_HEADER, TRIES_SIG_HEADER, Delivery, prior_tries
from common.errors import BatchfleetError
from common.messages import BatchMessage, JobConfig
from common.signing import verify_batch, verify_tries

log = logging.getLogger(__name__)


def admit(delivery: Delivery, job: JobConfig, key: bytes | None) -> BatchMessage | str:
    """The batch message, or the reason to dead-letter the delivery."""
    try:
        message = BatchMessage.model_validate_json(delivery.body)
    except ValidationError as exc:
        reason = f"unparseable batch message: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}"
        log.error("dead-lettering a message on %s: %s", delivery.queue, reason)
        return reason
    refusal = _refusal(delivery, message, job, key)
    if refusal is not None:
        log.error("dead-lettering batch %d of %s: %s", message.batch_id, job.job_id, refusal)
        return refusal
    if delivery.attempt > job.settings.run_max_try:
        # a handed-back copy carries its earlier tries, which the queue's delivery limit cannot see
        return "delivery_limit"
    return message


def _refusal(delivery: Delivery, message: BatchMessage, job: JobConfig, key: bytes | None) -> str | None:
    if message.job_id != job.job_id:
        return f"message for job {message.job_id} on {delivery.queue}"
    if key is not None:
        try:
            verify_batch(key, job.job_id, message, delivery.body)
        except BatchfleetError as exc:
            return exc.line()
    if (message.input and message.input not in job.inputs) or (not message.input and not job.input_data):
        return f"batch {message.batch_id} names no input of job {job.job_id} ({message.input!r})"
    return _header_refusal(delivery, job, key)


def _header_refusal(delivery: Delivery, job: JobConfig, key: bytes | None) -> str | None:
    """A tries header must be a count a handed-back copy can carry and, with a key, signed by a node:
    a forged one would charge (or spare) a genuine batch tries it never had."""
    prior = prior_tries(delivery.headers)
    if prior is None or prior >= job.settings.run_max_try:
        shown = repr(delivery.headers.get(PRIOR_TRIES_HEADER))[:40]
        return f"malformed {PRIOR_TRIES_HEADER} header {shown}: at most {job.settings.run_max_try - 1} expected"
    if prior and key is not None:
        try:
            verify_tries(key, delivery.body, prior, delivery.headers.get(TRIES_SIG_HEADER))
        except BatchfleetError as exc:
            return exc.line()
    return None
