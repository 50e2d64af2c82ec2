"""The topic-run state machine: one execution takes a topic's lock, processes batches, commits, releases.

Rendered to ``statemachines/topic_run.asl.json`` by ``python -m workflows`` and deployed by the SAM
template's ``TopicRunStateMachine``, which fills the ``${...Arn}`` placeholders from
``DefinitionSubstitutions``.

::

    Acquire ──> Acquired? ──acquired──> ProcessBatch ──> AdvanceCheckpoint ──> MoreBacklog? ──released──> Done
                    ├──paused──> Paused                           ^                    │
                    └──skipped_locked / duplicate──> Done         └──── not released ─┘
    any task error (after transient retries) ──> ReleaseAfterFailure ──> Failed

Contracts with the handlers (``functions/leanops/handlers``):

- Each Lambda task names the function ARN itself as ``Resource`` (not ``arn:aws:states:::lambda:invoke``),
  so a task's output is the handler's return value and a handler's exception reaches Retry/Catch under its
  class name (``leanops.errors``), which this module references by import.
- The state carried between states is the small *run state* the acquire and advance handlers return
  (topic, partition, outcome, lease, checkpoint, counters, ``released``, ``max_batches``) plus the last
  batch's *references* under ``$.batch`` (positions, counts, the sink object's name): never records.
- Task timeouts exceed the Lambda timeouts of ``template.yaml`` (design §3 I8), so Step Functions never
  retries a task while the first invocation may still run; ``tests/workflows`` checks this against the
  template.
"""

from __future__ import annotations

from leanops import errors
from workflows.steps import (
    Catch,
    Chain,
    Choice,
    ChoiceRule,
    Fail,
    Graph,
    Retry,
    Succeed,
    Task,
    to_asl_json,
)

NAME = "topic_run"

#: Step Functions task timeouts, in seconds. Each exceeds its function's Lambda timeout in template.yaml
#: (Acquire, Advance, Release: 10 from Globals; Process: 120) by a margin for cold start and invoke latency.
ACQUIRE_TIMEOUT_SECONDS = 30
PROCESS_TIMEOUT_SECONDS = 135
ADVANCE_TIMEOUT_SECONDS = 30
RELEASE_TIMEOUT_SECONDS = 30

#: Errors worth retrying: the Lambda service's own transient failures, and the store's (raised by the
#: handlers after boto3's retries). Protocol verdicts (LockLost, CheckpointConflict) are never retried:
#: retrying cannot change them, and a fenced-out run must stop.
LAMBDA_TRANSIENT_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
TRANSIENT_ERRORS = (
    *LAMBDA_TRANSIENT_ERRORS,
    errors.StoreThrottled.__name__,
    errors.StoreUnavailable.__name__,
)

#: Backoff: 1 s, then doubling, capped at 8 s, with full jitter; three retries after the first attempt.
RETRY_INTERVAL_SECONDS = 1
RETRY_MAX_ATTEMPTS = 3
RETRY_BACKOFF_RATE = 2
RETRY_MAX_DELAY_SECONDS = 8

#: Where a caught error lands in the state, and what ``Failed`` reads the error type and cause from.
ERROR_PATH = "$.error"


def _transient_retry() -> Retry:
    return Retry(
        error_equals=list(TRANSIENT_ERRORS),
        interval_seconds=RETRY_INTERVAL_SECONDS,
        max_attempts=RETRY_MAX_ATTEMPTS,
        backoff_rate=RETRY_BACKOFF_RATE,
        max_delay_seconds=RETRY_MAX_DELAY_SECONDS,
        jitter_strategy="FULL",
    )


def build() -> tuple[Graph, list[Task | Choice | Succeed | Fail]]:
    """Build the state machine's graph, and its states in reading order (the order they are rendered in)."""
    acquire = Task(
        "Acquire",
        comment=(
            "Claims this start's run key (a duplicate delivery of the same start is a no-op) and takes the "
            "topic's lock with this execution as owner; returns the run state, including the checkpoint to "
            "start from. A retry by the same execution re-enters the lock it already holds."
        ),
        resource="${AcquireFunctionArn}",
        parameters={
            "input.$": "$",
            "execution.$": "$$.Execution.Id",
            "execution_name.$": "$$.Execution.Name",
            "started.$": "$$.Execution.StartTime",
        },
        timeout_seconds=ACQUIRE_TIMEOUT_SECONDS,
    )
    acquired = Choice(
        "Acquired?",
        comment=(
            "Go on only when this execution holds the lock; a topic an operator paused, a topic locked by "
            "another run, or a start already handled, ends the run successfully with nothing done."
        ),
    )
    process = Task(
        "ProcessBatch",
        comment=(
            "Processes the next batch after the checkpoint (source, processor, sink) while renewing the "
            "lease, and adds the batch's references (positions, counts, sink object; never records) to the "
            "state under batch."
        ),
        resource="${ProcessFunctionArn}",
        result_path="$.batch",
        timeout_seconds=PROCESS_TIMEOUT_SECONDS,
    )
    advance = Task(
        "AdvanceCheckpoint",
        comment=(
            "Commits the batch: moves the checkpoint forward from exactly its previous value, fenced by the "
            "lock, and releases the lock in the same request when no backlog is left or the run reached "
            "its batch cap; returns the updated run state."
        ),
        resource="${AdvanceFunctionArn}",
        timeout_seconds=ADVANCE_TIMEOUT_SECONDS,
    )
    more_backlog = Choice(
        "MoreBacklog?",
        comment=(
            "Loops to the next batch while the lock is still held; once the commit released it, the run is "
            "done."
        ),
    )
    done = Succeed(
        "Done",
        comment=(
            "The run ended normally: batches processed, already up to date, skipped because another run "
            "holds the lock, or a duplicate start."
        ),
    )
    paused = Succeed(
        "Paused",
        comment=(
            "An operator paused the topic (leanops pause): the acquire took nothing, so there is nothing to "
            "release; runs go on once the topic is resumed. The output's outcome is paused."
        ),
    )
    release = Task(
        "ReleaseAfterFailure",
        comment=(
            "A task failed after its retries: releases the lock if this execution still holds it "
            "(owner-checked, a no-op otherwise), so the topic is free now rather than when the lease "
            "expires. Keeps the state, and the caught error, for Failed."
        ),
        resource="${ReleaseFunctionArn}",
        parameters={"state.$": "$", "owner.$": "$$.Execution.Id", "started.$": "$$.Execution.StartTime"},
        result_path=None,
        timeout_seconds=RELEASE_TIMEOUT_SECONDS,
    )
    failed = Fail(
        "Failed",
        comment=(
            "Fails the execution with the error type and cause that the failed task raised, whether or not "
            "the release that followed succeeded."
        ),
        error_path=f"{ERROR_PATH}.Error",
        cause_path=f"{ERROR_PATH}.Cause",
    )

    # Acquire is caught too: an acquire whose write landed but whose Lambda then failed would otherwise
    # leave the topic locked until its lease expires.
    for task in (acquire, process, advance):
        task.add_retry(_transient_retry())
        task.add_catch(Catch(error_equals=["States.ALL"], result_path=ERROR_PATH, next_step=release))
    release.add_retry(_transient_retry())
    release.add_catch(Catch(error_equals=["States.ALL"], result_path="$.release_error", next_step=failed))

    # Chaining a Choice sets its Default; the rules are added explicitly.
    acquired.add_choice(ChoiceRule.StringEquals(variable="$.outcome", value="acquired"), next_step=process)
    acquired.add_choice(ChoiceRule.StringEquals(variable="$.outcome", value="paused"), next_step=paused)
    more_backlog.add_choice(ChoiceRule.BooleanEquals(variable="$.released", value=False), next_step=process)
    Chain([process, advance, more_backlog, done])
    Chain([release, failed])
    graph = Graph(
        Chain([acquire, acquired, done]),
        comment=(
            "leanops topic run: takes the topic's lock, processes and commits batches after the checkpoint "
            "while backlog remains (up to the run's batch cap), and releases the lock, also after a failure."
        ),
    )
    return graph, [acquire, acquired, process, advance, more_backlog, done, paused, release, failed]


def render() -> str:
    """The ASL text of the topic-run state machine, as committed in ``statemachines/topic_run.asl.json``."""
    graph, states = build()
    return to_asl_json(graph, states)
