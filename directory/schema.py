"""The directory's tables and their migrations (docs/formats/directory-schema.md).

Keys (u64) are stored as decimal text: both engines' integers are signed 64-bit, and the
directory never orders or sums keys. Times are Unix seconds (float). The state and role
columns hold the values of the StrEnums below, and every comparison goes through them.
Every table is created through `migrate(db, COMPONENT, MIGRATIONS)`; a change to a table is
a new migration appended to MIGRATIONS, never an edit of an applied one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

from common.db import Migration
from common.jobs import schema as job_schema

COMPONENT: Final = "directory"
# The directory's write lock (common/db.py): every transaction on its tables takes it.
LOCK: Final = "directory"
# The prefix of the directory loops' lease names in the job framework's lease table.
LEASE_PREFIX: Final = "directory."


class NodeRole(StrEnum):
    """`nodes.role`, and `pending_deletes.target_role`: what a delete is owed to."""

    STORE = "store"
    CACHE = "cache"
    # An f4 name node: serves the store's read and delete protocol for the volumes migrated
    # to its cell (docs/api/directory.md "The f4 tier"). As a delete target: a needle
    # delete sent with the store's protocol, owed until the f4 replica is removed.
    F4 = "f4"


class LogicalVolumeState(StrEnum):
    """`logical_volumes.state`."""

    CREATING = "creating"  # physical volumes not yet all created (growth.py finishes them)
    ACTIVE = "active"  # in service
    # Reads served by the f4 cell (its name node is the only replica); the Haystack
    # replicas are released. Never writable; final (tiering.py).
    F4 = "f4"


class ReplicaState(StrEnum):
    """`replicas.state`."""

    # Its node is pulling the data (a move in progress, moves.py), or, on an f4 node, the
    # volume is being migrated to the f4 cell (tiering.py).
    COPYING = "copying"
    READY = "ready"  # holds the volume's data


class RepairState(StrEnum):
    """`repairs.state`."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"  # repair_attempts_max failures: stays listed for operators


metadata = sa.MetaData()

nodes = sa.Table(
    "directory_nodes",
    metadata,
    sa.Column("node_id", sa.String(200), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),  # NodeRole
    sa.Column("url", sa.String(500), nullable=False),
    sa.Column("failure_domain", sa.String(300), nullable=False),
    sa.Column("free_bytes", sa.BigInteger, nullable=False),
    sa.Column("first_heartbeat_unix_s", sa.Float, nullable=False),
    sa.Column("last_heartbeat_unix_s", sa.Float, nullable=False),
    # The volumes of the last heartbeat: [{volume_id, mode, reason, size_bytes,
    # size_bytes_max}], JSON text.
    sa.Column("volumes_json", sa.Text, nullable=False),
)

logical_volumes = sa.Table(
    "directory_logical_volumes",
    metadata,
    sa.Column("volume_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("state", sa.String(16), nullable=False),  # LogicalVolumeState
    # Last writability the health loop computed (reads compute it afresh).
    sa.Column("writable", sa.Boolean, nullable=False),
    sa.Column("readonly_reason", sa.String(200), nullable=True),
    sa.Column("readonly_until_unix_s", sa.Float, nullable=False),
    sa.Column("operator_readonly", sa.Boolean, nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

replicas = sa.Table(
    "directory_replicas",
    metadata,
    sa.Column(
        "volume_id",
        sa.BigInteger,
        sa.ForeignKey("directory_logical_volumes.volume_id"),
        primary_key=True,
    ),
    sa.Column(
        "node_id", sa.String(200), sa.ForeignKey("directory_nodes.node_id"), primary_key=True
    ),
    sa.Column("state", sa.String(16), nullable=False),  # ReplicaState
    sa.Column("replaces", sa.String(200), nullable=True),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

pending_deletes = sa.Table(
    "directory_pending_deletes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("volume_id", sa.BigInteger, nullable=False),
    sa.Column("key", sa.String(20), nullable=False),
    sa.Column("alt_key", sa.BigInteger, nullable=True),  # NULL: every variant
    sa.Column("node_id", sa.String(200), nullable=False),
    sa.Column("target_role", sa.String(16), nullable=False),  # NodeRole
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_try_unix_s", sa.Float, nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("last_error", sa.String(500), nullable=True),
)

repairs = sa.Table(
    "directory_repairs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("volume_id", sa.BigInteger, nullable=False),
    sa.Column("key", sa.String(20), nullable=False),
    sa.Column("alt_key", sa.BigInteger, nullable=False),
    sa.Column("node_id", sa.String(200), nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # RepairState
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_try_unix_s", sa.Float, nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("updated_unix_s", sa.Float, nullable=False),
    sa.Column("last_error", sa.String(500), nullable=True),
)

# The loops' leases until migration 2 moved them to the job framework's lease table
# (common/jobs/schema.py); kept for the migrations that create and empty it.
_leases_v1 = sa.Table(
    "directory_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_unix_s", sa.Float, nullable=False),
)

# Migration 1's tables: what it creates stays fixed as tables are added later.
_tables_v1 = tuple(metadata.sorted_tables)

# Replicas a move replaced (replica_ready of a copy made with `replaces`), kept until the
# releases loop has deleted the old copy from its node or the node no longer reports it
# (tiering.replaced_copies): a copy is deleted only if this table says the directory
# itself replaced it, never because the directory merely does not know it (as after a
# restore from an older backup).
replaced_replicas = sa.Table(
    "directory_replaced_replicas",
    metadata,
    sa.Column("volume_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("node_id", sa.String(200), primary_key=True),
    sa.Column("replaced_unix_s", sa.Float, nullable=False),
)

_indexes = (
    sa.Index("directory_replicas_by_node", replicas.c.node_id),
    sa.Index("directory_pending_deletes_due", pending_deletes.c.next_try_unix_s),
    sa.Index("directory_pending_deletes_by_node", pending_deletes.c.node_id),
    sa.Index("directory_repairs_due", repairs.c.state, repairs.c.next_try_unix_s),
)


def _move_leases() -> list[sa.Executable]:
    """Migration 2: the loops' leases into the framework's lease table (named with
    LEASE_PREFIX), then the old table dropped."""
    old = _leases_v1.c
    moved = sa.select(LEASE_PREFIX + old.name, old.holder, old.expires_unix_s)
    return [
        *job_schema.leases_create_steps(),
        job_schema.leases.insert().from_select(["name", "holder", "expires_unix_s"], moved),
        DropTable(_leases_v1),
    ]


MIGRATIONS: Final = (
    Migration(
        1,
        "nodes, logical volumes, replicas, pending deletes, repairs, leases",
        [CreateTable(t) for t in _tables_v1] + [CreateIndex(i) for i in _indexes],
    ),
    Migration(2, "the loops' leases move to the job framework's table", _move_leases()),
    Migration(
        3,
        "replicas a move replaced, until their old copy is released",
        [CreateTable(replaced_replicas)],
    ),
)
