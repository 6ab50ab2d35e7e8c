"""The final-status rule (engine/lifecycle.py outcome), over a table of attempt results, as test_state.py does
for the transitions: each row written out independently of the function."""
import pytest

from engine.lifecycle import outcome
from engine.state import JobStatus as S
from runners.spec import AttemptResult, Failure, FailureKind as K, StopRequest

DEADLINE = StopRequest(15, 10.0, "the job's maximum running time (2s) was reached", kind="deadline")
CANCEL = StopRequest(15, 10.0, "cancelled by user")
NO_SPACE = Failure(K.NO_SPACE, "the job's logs could not be written")

# (result, cancelled) -> (status, error kind or None, status_details or None, system log summary)
TABLE = [
    (AttemptResult(started=True, return_code=0), False, (S.SUCCESS, None, None, "job completed successfully")),
    (AttemptResult(started=True, return_code=3), False,
     (S.ERROR, None, "program returned code 3", "job finished with return code 3")),
    # what the executor saw goes with the code: a kill for memory, a disk its output says was full
    (AttemptResult(started=True, return_code=1, note="its last output says a disk was full (No space left on "
                                                     "device)"), False,
     (S.ERROR, None, "program returned code 1 (its last output says a disk was full (No space left on device))",
      "job finished with return code 1")),
    (AttemptResult(started=True, return_code=0), True, (S.CANCELLED, None, None, "job cancelled")),
    (AttemptResult(started=True, return_code=143, stopped=CANCEL), True, (S.CANCELLED, None, None, "job cancelled")),
    (AttemptResult(stopped=CANCEL), True, (S.CANCELLED, None, None, "job cancelled")),  # stopped before its start
    (AttemptResult(failure=Failure(K.RUNNER_LOST, "attempt a lost")), True, (S.CANCELLED, None, None,
                                                                             "job cancelled")),
    (AttemptResult(started=True, return_code=143, stopped=DEADLINE), False,
     (S.ERROR, K.DEADLINE, DEADLINE.reason, "job stopped: maximum running time reached")),
    # a job that traps the deadline's signal and exits 0 still overran its time
    (AttemptResult(started=True, return_code=0, stopped=DEADLINE), False,
     (S.ERROR, K.DEADLINE, DEADLINE.reason, "job stopped: maximum running time reached")),
    (AttemptResult(started=True, return_code=137, stopped=StopRequest(9, 0, "", kind="deadline")), False,
     (S.ERROR, K.DEADLINE, "the job's maximum running time was reached", "job stopped: maximum running time reached")),
    (AttemptResult(started=True, return_code=137, stopped=StopRequest(9, 0, NO_SPACE.message, kind="storage"),
                   failure=NO_SPACE), False, (S.ERROR, K.NO_SPACE, NO_SPACE.message, "job failed")),
    (AttemptResult(failure=Failure(K.INVALID_INPUT, "input 'a.zip': corrupt")), False,
     (S.ERROR, K.INVALID_INPUT, "input 'a.zip': corrupt", "job failed")),
    (AttemptResult(failure=Failure(K.ENV_BUILD_FAILED, "build failed")), False,
     (S.ERROR, K.ENV_BUILD_FAILED, "build failed", "job failed")),
    (AttemptResult(started=True, failure=Failure(K.RUNNER_LOST, "the job's container disappeared")), False,
     (S.ERROR, K.RUNNER_LOST, "the job's container disappeared", "job failed")),
    # never started, not cancelled, nothing said: an engine bug, said as one
    (AttemptResult(), False, (S.ERROR, K.INTERNAL, "the attempt ended before the job started", "job failed")),
]


@pytest.mark.parametrize("result,cancelled,want", TABLE)
def test_outcome(result, cancelled, want):
    o = outcome(result, cancelled)
    assert (o.status, o.error.kind if o.error else None, o.details, o.summary) == want


def test_every_failure_kind_has_a_grpc_code():
    from engine.api.errors import JOB_FAILURE_CODES
    import grpc
    assert set(JOB_FAILURE_CODES) == set(K)
    assert grpc.StatusCode.UNKNOWN not in JOB_FAILURE_CODES.values()
    # what a user can fix shows as such, never as the engine's fault
    for k in (K.INVALID_INPUT, K.MISSING, K.UNSUPPORTED, K.ENV_BUILD_FAILED, K.IMAGE_UNAVAILABLE, K.DEADLINE):
        assert JOB_FAILURE_CODES[k] != grpc.StatusCode.INTERNAL


def test_records_of_earlier_releases_keep_their_code():
    import grpc
    from engine.api.errors import job_error_code
    from engine.model import OperationError
    assert job_error_code(OperationError(code="DEADLINE_EXCEEDED", message="x")) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert job_error_code(OperationError.of(K.NO_SPACE, "x")) == grpc.StatusCode.RESOURCE_EXHAUSTED
