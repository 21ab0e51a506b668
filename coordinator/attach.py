"""Carry on with a job already in the store: after a coordinator restart, or to resume it."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator

from pydantic import ValidationError

from common.broker.base import queue_names
from common.errors import UsageError
from common.jobarea import JobArea
from common.messages import BatchResult, JobConfig
from common.parts.frames import PartRecord, scan_parts
from common.signing import check_job_signature
from common.storage import StorageOptions, open_storage
from coordinator.plan.feed import PlanFeeder
from coordinator.plan.submit import fetch_manifest, mark_published, plan_size, publish_plan, was_published
from coordinator.report.joblogs import Summary
from coordinator.runner import JobRun, RunOptions, finish_job

log = logging.getLogger(__name__)


def load_job(store_uri: str, job_id: str, options: StorageOptions) -> JobConfig:
    uri = JobArea.of(store_uri, job_id).job_file
    storage = open_storage(uri, options)
    if not storage.exists(uri):
        raise UsageError(f"no job {job_id} in store {store_uri}", "check the job id, --store or $BATCHFLEET_STORE")
    try:
        return JobConfig.model_validate_json(storage.read_bytes(uri))
    except ValidationError as exc:
        raise UsageError(f"{uri} is not a batchfleet job file: {exc.errors()[0]['msg']}") from exc


def node_of(ref: str) -> str:
    """The node whose folder holds a part: <area>/parts/<node>/..."""
    return ref.replace("\\", "/").split("/parts/", 1)[-1].split("/", 1)[0]


def committed_in_store(job: JobConfig, options: StorageOptions) -> Iterator[PartRecord]:
    """Every complete part in the store, as found (a batch may have several; the tally keeps the first)."""
    storage = open_storage(job.store_uri, options)
    yield from scan_parts(storage, JobArea(job.store_uri).parts)


def failed_in_store(job: JobConfig, options: StorageOptions) -> Iterator[BatchResult]:
    storage = open_storage(job.store_uri, options)
    for info in storage.list(JobArea(job.store_uri).failed):
        try:
            yield BatchResult.model_validate(json.loads(storage.read_bytes(info.uri)))
        except (ValidationError, ValueError):
            log.warning("ignored unreadable failure record %s", info.uri)


def attach(job_id: str, options: RunOptions, resume: bool) -> Summary:
    """Follow (or, with resume, re-run the unfinished part of) a stored job to its end."""
    job = load_job(options.store_uri, job_id, options.storage_options)
    if options.signing_key is not None:
        check_job_signature(job, options.signing_key)
    manifest = fetch_manifest(job, options.storage_options)
    run = JobRun(job, options)
    try:
        batches, items = plan_size(manifest)
        tally = run.new_tally(batches)
        reused = sum(
            tally.reuse(found, node_of(found.ref), counted_as_reused=resume)
            for found in committed_in_store(job, options.storage_options)
        )
        if not resume:
            for result in failed_in_store(job, options.storage_options):
                tally.apply(result)
        broker = options.broker
        broker.declare_job(job.job_id, job.settings.run_max_try)
        if resume:
            broker.purge(f"bf.{job.job_id}.batches")
        if resume or not was_published(job, options.storage_options):
            if options.embedded:  # the in-memory queue is fed as it drains (plan/feed.py)
                names = queue_names(job.job_id)
                run.feeder = PlanFeeder(broker, names.batches, manifest, skip=tally.resolved, complete=True)
            else:
                sent = publish_plan(broker, job, manifest, tally.resolved)
                log.info("job %s: %d mini-batches published, %d reused", job.job_id, sent, reused)
            mark_published(job, options.storage_options)
    except BaseException:
        run.stop_feeding()
        if run.trylog is not None:
            run.trylog.discard()
        raise
    finally:
        if run.feeder is None:
            shutil.rmtree(manifest.parent, ignore_errors=True)
    area = JobArea(job.store_uri)
    for marker in (area.cancel, area.ended):  # it runs again: workers may serve it again
        _remove(marker, options.storage_options)
    return finish_job(run, tally, items)


def _remove(uri: str, options: StorageOptions) -> None:
    storage = open_storage(uri, options)
    if storage.exists(uri):
        storage.delete(uri)


def run_stored(job_id: str, options: RunOptions) -> Summary:
    """Run a submitted job (plan and publish it), or carry on with it if that was already done."""
    from coordinator.runner import JobRun

    job = load_job(options.store_uri, job_id, options.storage_options)
    ended = JobArea(job.store_uri).ended
    if open_storage(ended, options.storage_options).exists(ended):
        raise UsageError(f"job {job_id} has ended; it is not run again", f"use `batchfleet resume {job_id}`")
    if was_published(job, options.storage_options):
        return attach(job_id, options, resume=False)
    if options.signing_key is not None:
        check_job_signature(job, options.signing_key)
    run = JobRun(job, options)
    batches, items = run.submit()
    return finish_job(run, run.new_tally(batches), items)
