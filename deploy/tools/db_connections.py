"""Postgres connection arithmetic of a wafleet deployment, checked by validate_deploy.py.

What each process opens, read from the code:

  worker    WAFLEET_DB_POOL_SIZE (default 10; the message path's pool, worker/src/startup.rs)
            + WAFLEET_SENDER_DB_POOL_SIZE (default 3; the sender's own pool, worker/src/sender.rs)
            + 1 (the LISTEN connection for tenant changes, a pool of its own)
            + 1 (the sender's claim lease, fleet/src/outbox/lease.rs: a session whose advisory
              lock tells the others that this worker's `sending` rows are still being sent)
            per replica, at KEDA's maxReplicaCount;
  leaders   one direct connection per advisory-lock duty held at once across the fleet
            (fleet/src/locks.rs: reconciler, canary, retention), plus one short-lived attempt per
            duty by a replica that does not lead (the lock is tried on a fresh connection);
  admin     WAFLEET_ADMIN_DB_POOL_SIZE (default 5) per admin replica;
  CLI       2 (its pool, cli/src/commands.rs) for one operator session;
  migrate   2, as the owner role (neither duty role).

The worker's role (wafleet_worker) must cover worker + leaders, the administration role
(wafleet_admin) admin + CLI; Postgres' `max_connections` must also cover both limits, migrate,
superuser_reserved_connections (3) and CNPG's own connections (replication, monitoring; ~10).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_POOL = {"WAFLEET_DB_POOL_SIZE": 10, "WAFLEET_SENDER_DB_POOL_SIZE": 3, "WAFLEET_ADMIN_DB_POOL_SIZE": 5}
LISTEN_PER_WORKER = 1
LEASE_PER_WORKER = 1
CLI = 2
MIGRATE = 2
RESERVED = 3
CNPG_OWN = 10


def leader_duties(repo: Path) -> int:
    """How many advisory-lock duties fleet/src/locks.rs registers (`pub const ALL: [LockKey; N]`)."""
    m = re.search(r"pub const ALL: \[LockKey; (\d+)\]", (repo / "fleet/src/locks.rs").read_text())
    if m is None:
        raise ValueError("fleet/src/locks.rs: no `pub const ALL: [LockKey; N]`")
    return int(m.group(1))


@dataclass
class Demand:
    """Connections one deployment may open as the worker's and the administration role."""
    worker_replicas: int
    worker_pool: int
    sender_pool: int
    admin_replicas: int
    admin_pool: int
    leaders: int

    @property
    def worker(self) -> int:
        return self.worker_replicas * (self.worker_pool + self.sender_pool + LISTEN_PER_WORKER + LEASE_PER_WORKER) + 2 * self.leaders

    @property
    def admin(self) -> int:
        return self.admin_replicas * self.admin_pool + CLI

    def formula(self, role: str) -> str:
        if role == "wafleet_worker":
            return (f"{self.worker_replicas} workers × ({self.worker_pool} + {self.sender_pool} + {LISTEN_PER_WORKER} "
                    f"+ {LEASE_PER_WORKER}) + 2 × {self.leaders} leader connections = {self.worker}")
        return f"{self.admin_replicas} admin × {self.admin_pool} + CLI {CLI} = {self.admin}"


def demand(worker_env: dict, worker_replicas: int, admin_env: dict, admin_replicas: int, leaders: int) -> Demand:
    def pool(env: dict, var: str) -> int:
        return int(env.get(var, DEFAULT_POOL[var]))
    return Demand(worker_replicas, pool(worker_env, "WAFLEET_DB_POOL_SIZE"), pool(worker_env, "WAFLEET_SENDER_DB_POOL_SIZE"),
                  admin_replicas, pool(admin_env, "WAFLEET_ADMIN_DB_POOL_SIZE"), leaders)


def problems(d: Demand, roles: dict[str, dict], max_connections: int) -> list[str]:
    """What is wrong with the CNPG roles' connectionLimit and max_connections for demand `d`: each
    duty role covers its own share."""
    out = []

    def limit(name: str) -> int | None:
        r = roles.get(name)
        return None if r is None else int(r.get("connectionLimit", -1))

    shares = [("wafleet_worker", d.worker), ("wafleet_admin", d.admin)]
    total = 0
    for name, need in shares:
        got = limit(name)
        if got is None:
            out.append(f"no managed role {name}")
            continue
        if got == -1:
            out.append(f"role {name} has no connectionLimit (need >= {need}: {d.formula(name)})")
            continue
        if got < need:
            out.append(f"role {name} connectionLimit {got} < {need} ({d.formula(name)})")
        total += max(got, need)
    floor = total + MIGRATE + RESERVED + CNPG_OWN
    if max_connections < floor:
        out.append(f"max_connections {max_connections} < {floor} (role limits {total} + migrate {MIGRATE} "
                   f"+ superuser_reserved {RESERVED} + CNPG {CNPG_OWN})")
    return out
