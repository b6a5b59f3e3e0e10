"""The Runtime contract, run against the process runtime on real cgroups."""

from tests.runtime.contract import RuntimeContract


class TestProcessRuntimeContract(RuntimeContract):
    image = "host"  # the only kind of image the process runtime runs: the host itself
