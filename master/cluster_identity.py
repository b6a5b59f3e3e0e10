"""The cluster's identity (DESIGN.md #10): the store says which cluster it is, and a master whose store says
nothing refuses to start unless told to initialise a new cluster.

Why: an empty or missing store used to start a brand-new cluster silently (epoch 1, no jobs), whose master
then told the agents to kill everything they ran. Now the store holds a cluster id, written once when a
cluster is initialised (`titus master --init-cluster`, TITUS_INIT_CLUSTER=true; `titus dev` does it for a
data directory it creates), each agent remembers the id of the cluster it joined (agent/cluster.py) and
refuses the orders of a master of another cluster, and a master refuses to start on a store that is empty
or of another cluster than the one it was told (TITUS_CLUSTER_ID). A store from before cluster ids that
holds data is adopted: it is a real cluster, only unnamed.

`decide` is pure; `ManagerBase.start` reads the store, asks it, and carries the verdict out.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Exit code of `titus master` when the store holds no cluster, or another one (docs/ARCHITECTURE.md).
EXIT_NO_CLUSTER = 4
#: Exit code of `titus master` when the store's files are damaged.
EXIT_STORE_CORRUPTED = 5


class ClusterIdentityError(Exception):
    """The master must not start on this store; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Verdict:
    cluster_id: str
    write: bool  # the id is new (initialised, or adopted): store it
    note: str  # for the log


def decide(stored_id: str | None, has_data: bool, init: bool, expected_id: str, new_id: str,
           where: str) -> Verdict:
    """What to do with the store's identity; raises ClusterIdentityError for a refusal."""
    if stored_id is not None:
        if expected_id and stored_id != expected_id:
            raise ClusterIdentityError(
                f"the store at {where} belongs to cluster {stored_id}, not to cluster {expected_id} "
                f"(TITUS_CLUSTER_ID): refusing to start. Point the master at the store of cluster "
                f"{expected_id}, or unset TITUS_CLUSTER_ID to run cluster {stored_id}")
        return Verdict(stored_id, False, f"cluster {stored_id}")
    if has_data:
        adopted = expected_id or new_id
        return Verdict(adopted, True, f"the store predates cluster ids; it is now cluster {adopted}")
    if init:
        created = expected_id or new_id
        return Verdict(created, True, f"initialised a new cluster {created}")
    raise ClusterIdentityError(
        f"the store at {where} is empty or missing: it holds no cluster. Refusing to start, so that a lost "
        f"or wrong data directory cannot pass for a new cluster whose master would stop every agent's "
        f"tasks. If this is the data directory of an existing cluster, restore its store (titus.db) or fix "
        f"TITUS_DATA_DIR / the Cassandra settings; to create a new cluster here, start once with "
        f"--init-cluster (TITUS_INIT_CLUSTER=true)")
