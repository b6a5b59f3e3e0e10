"""High-availability tests: real `titus master` processes electing a leader through a real ZooKeeper."""

from tests.fixtures.servers import *  # noqa: F403
