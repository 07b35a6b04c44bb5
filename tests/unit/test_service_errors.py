"""Our errors are found inside Ray's wrappers: actor/task errors, Train's worker failures, or only their text."""

from ray.exceptions import RayTaskError

from alarm.errors import CheckpointError, InvalidInput
from services.errors import alarm_error_in, error_chain


def test_found_inside_a_ray_task_error():
    cause = InvalidInput("row 3 has no audio")
    wrapped = RayTaskError("fn", "Traceback ...", cause)
    assert alarm_error_in(wrapped) == "row 3 has no audio"
    assert cause in error_chain(wrapped)


def test_found_in_train_worker_failures_and_in_text():
    failed = RuntimeError("training failed")
    failed.worker_failures = {0: CheckpointError("s3://b/ckpt is empty")}
    assert alarm_error_in(failed) == "CheckpointError: s3://b/ckpt is empty"
    assert alarm_error_in(RuntimeError("remote: InvalidInput: prompt is empty\n  at ...")) == "prompt is empty"
    assert alarm_error_in(RuntimeError("something else")) is None


def test_the_chain_ends_on_cycles():
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert error_chain(a) == [a, b]
