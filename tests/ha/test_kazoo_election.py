"""KazooLeaderElection against a real ZooKeeper: who leads, where clients go, and when leadership ends."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from master.leader import KazooLeaderElection
from tests.conftest import wait_for
from tests.fixtures.servers import ServerHandle


class Contender:
    def __init__(self, hosts: str, root: str, name: str) -> None:
        self.url = f"http://127.0.0.1/{name}"
        self.election = KazooLeaderElection(hosts, self.url, session_timeout_s=4.0, root=root)
        self.elected = threading.Event()
        self.lost = threading.Event()
        self.lost_while_leader: list[bool] = []

    def start(self) -> None:
        def on_elected() -> None:
            self.elected.set()
            self.election.publish()

        def on_lost() -> None:
            self.lost_while_leader.append(self.election.is_leader())
            self.lost.set()

        self.election.start(on_elected, on_lost)


@pytest.fixture
def contenders(zookeeper_server: str) -> Iterator[Callable[[str], Contender]]:
    root = f"/titus-test/{uuid.uuid4().hex[:12]}"
    made: list[Contender] = []

    def make(name: str, hosts: str = zookeeper_server) -> Contender:
        c = Contender(hosts, root, name)
        made.append(c)
        c.start()
        return c

    yield make
    for c in made:
        c.election.resign()


def test_the_first_contender_leads_and_the_others_learn_its_url(
        contenders: Callable[[str], Contender]) -> None:
    a = contenders("a")
    wait_for(a.elected.is_set, 10, what="a to be elected")
    b, c = contenders("b"), contenders("c")
    for x in (a, b, c):
        wait_for(lambda x=x: x.election.leader_url() == a.url, 10, what="the published leader URL")
    assert a.election.is_leader()
    assert not b.election.is_leader() and not c.election.is_leader()
    assert not b.elected.is_set() and not c.elected.is_set()


def test_resigning_hands_over_to_the_next_contender(contenders: Callable[[str], Contender]) -> None:
    a = contenders("a")
    wait_for(a.elected.is_set, 10, what="a to be elected")
    b = contenders("b")
    wait_for(lambda: b.election.leader_url() == a.url, 10, what="b to learn the leader")
    a.election.resign()
    wait_for(b.elected.is_set, 10, what="b to take over")
    wait_for(lambda: b.election.leader_url() == b.url, 10, what="b's URL to be published")
    assert not a.election.is_leader()
    assert a.lost_while_leader == []  # a graceful resignation is not a loss


def test_the_leader_stops_at_suspended_before_its_session_expires(
        zookeeper_factory: Callable[[], ServerHandle], contenders: Callable[[str], Contender]) -> None:
    zk = zookeeper_factory()
    a = contenders("a", zk.hosts)
    wait_for(a.elected.is_set, 10, what="a to be elected")
    zk.stop()  # no server: the session cannot have expired yet, but it is in doubt
    wait_for(a.lost.is_set, 10, what="a to give up leadership")
    assert a.election.client.state == "SUSPENDED"  # not LOST: no server could have said the session expired
    assert a.lost_while_leader == [False]  # is_leader() was already False when the master was told
    assert not a.election.is_leader()
