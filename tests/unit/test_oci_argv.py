"""What an OCI task runs: the job's entryPoint/command or the image's ENTRYPOINT/CMD, by Titus's rules."""

from __future__ import annotations

import pytest

from agent.runtime.base import TaskSpec
from agent.runtime.images import ImageConfig
from agent.runtime.oci_spec import SpecError, task_argv

IMAGE = ImageConfig(entrypoint=("/bin/ep", "-x"), cmd=("default",))


def _spec(entry_point: tuple[str, ...] = (), command: tuple[str, ...] = ()) -> TaskSpec:
    return TaskSpec(task_id="t1", job_id="j1", image="busybox:latest", entry_point=entry_point,
                    command=command)


@pytest.mark.parametrize(
    ("entry_point", "command", "argv"),
    [
        ((), (), ["/bin/ep", "-x", "default"]),  # neither: the image's own ENTRYPOINT + CMD
        ((), ("job",), ["/bin/ep", "-x", "job"]),  # command replaces CMD only
        (("/bin/own",), (), ["/bin/own"]),  # entryPoint drops the image's CMD
        (("/bin/own",), ("a", "b"), ["/bin/own", "a", "b"]),
        (("",), ("/bin/true",), ["/bin/true"]),  # [""] clears the image's ENTRYPOINT
        ((), ("",), ["/bin/ep", "-x"]),  # [""] clears the image's CMD
    ],
    ids=["image-own", "command-only", "entrypoint-only", "both", "entrypoint-cleared", "cmd-cleared"],
)
def test_argv_follows_titus_rules(entry_point: tuple[str, ...], command: tuple[str, ...],
                                  argv: list[str]) -> None:
    assert task_argv(_spec(entry_point, command), IMAGE) == argv


def test_nothing_left_to_run_is_refused() -> None:
    with pytest.raises(SpecError, match="nothing to run"):
        task_argv(_spec(("",), ("",)), IMAGE)
    with pytest.raises(SpecError, match="nothing to run"):
        task_argv(_spec(), ImageConfig())
