"""The review schema: cases, their mask revisions and their verdicts (migrations/ creates it; a test keeps them equal).

The worklist's columns (status, reviewer, score, class volumes, QC) are kept on the case row, written in the same
transaction as the verdict or revision they come from, so that listing 10 000 cases reads one table.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

cases = Table(
    "cases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("status", String(20), nullable=False, server_default="unreviewed"),
    Column("reviewer", String(100), nullable=True),
    Column("score", Integer, nullable=True),
    Column("note", Text, nullable=False, server_default=""),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("latest_revision", Integer, nullable=False, server_default="0"),
    Column("volume_sha256", String(64), nullable=False),
    Column("volume_suffix", String(8), nullable=False),
    Column("volume_name", String(200), nullable=False),
    Column("shape", JSON, nullable=False),
    Column("spacing_mm", JSON, nullable=False),
    Column("voxel_volume_ml", Float, nullable=False),
    Column("classes", JSON, nullable=False),
    Column("class_volumes", JSON, nullable=False),
    Column("qc_score", Float, nullable=True),
    Column("qc_warnings", JSON, nullable=False),
    Column("source", String(20), nullable=False),
    Column("model", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("name"),
    CheckConstraint("status IN ('unreviewed', 'accepted', 'needs_correction', 'rejected')", name="status"),
    CheckConstraint("score IS NULL OR (score >= 1 AND score <= 5)", name="score"),
    Index(None, "status", "updated_at", "id"),
    Index(None, "reviewer", "updated_at", "id"),
    Index(None, "updated_at", "id"),
)

mask_revisions = Table(
    "mask_revisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", Integer, ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("parent", Integer, nullable=True),
    Column("source", String(20), nullable=False),
    Column("author", String(200), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("changed_voxels", JSON, nullable=False),
    Column("class_voxels", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Two revisions made from one version would collide here even if the version check were bypassed.
    UniqueConstraint("case_id", "revision"),
)

reviews = Table(
    "reviews",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", Integer, ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
    Column("verdict", String(20), nullable=False),
    Column("score", Integer, nullable=True),
    Column("note", Text, nullable=False),
    Column("reviewer", String(100), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("case_version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("case_id", "case_version"),
    CheckConstraint("verdict IN ('accepted', 'needs_correction', 'rejected')", name="verdict"),
    CheckConstraint("score IS NULL OR (score >= 1 AND score <= 5)", name="score"),
)
