"""The Runtime contract, run against the process runtime on real cgroups."""

from tests.runtime.contract import RuntimeContract


class TestProcessRuntimeContract(RuntimeContract):
    pass
