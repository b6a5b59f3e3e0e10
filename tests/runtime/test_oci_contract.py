"""The Runtime contract, run against the OCI runtime: real registry, skopeo, overlayfs, runc, cgroups."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.runtime.oci import OciRuntime
from tests.runtime.conftest import BUSYBOX_IMAGE
from tests.runtime.contract import RuntimeContract


class TestOciRuntimeContract(RuntimeContract):
    image = BUSYBOX_IMAGE

    @pytest.fixture
    def runtime(self, oci_runtimes: Callable[[], OciRuntime]) -> OciRuntime:
        return oci_runtimes()

    @pytest.fixture
    def new_runtime(self, oci_runtimes: Callable[[], OciRuntime]) -> Callable[[], OciRuntime]:
        return oci_runtimes
