"""Cases, mask revisions and reviews.

Revision ID: 0001
Revises:
Create Date: 2026-06-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_STATUS = "status IN ('unreviewed', 'accepted', 'needs_correction', 'rejected')"
_VERDICT = "verdict IN ('accepted', 'needs_correction', 'rejected')"
_SCORE = "score IS NULL OR (score >= 1 AND score <= 5)"


def upgrade() -> None:
    _create_cases()
    _create_mask_revisions()
    _create_reviews()


def _create_cases() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="unreviewed"),
        sa.Column("reviewer", sa.String(100), nullable=True),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("latest_revision", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("volume_sha256", sa.String(64), nullable=False),
        sa.Column("volume_suffix", sa.String(8), nullable=False),
        sa.Column("volume_name", sa.String(200), nullable=False),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("spacing_mm", sa.JSON(), nullable=False),
        sa.Column("voxel_volume_ml", sa.Float(), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("class_volumes", sa.JSON(), nullable=False),
        sa.Column("qc_score", sa.Float(), nullable=True),
        sa.Column("qc_warnings", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("model", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
        sa.UniqueConstraint("name", name="uq_cases_name"),
        sa.CheckConstraint(_STATUS, name="ck_cases_status"),
        sa.CheckConstraint(_SCORE, name="ck_cases_score"),
    )
    op.create_index("ix_cases_status_updated_at_id", "cases", ["status", "updated_at", "id"])
    op.create_index("ix_cases_reviewer_updated_at_id", "cases", ["reviewer", "updated_at", "id"])
    op.create_index("ix_cases_updated_at_id", "cases", ["updated_at", "id"])


def _create_mask_revisions() -> None:
    op.create_table(
        "mask_revisions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("parent", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("changed_voxels", sa.JSON(), nullable=False),
        sa.Column("class_voxels", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mask_revisions"),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_mask_revisions_case_id_cases", ondelete="CASCADE"),
        sa.UniqueConstraint("case_id", "revision", name="uq_mask_revisions_case_id_revision"),
    )


def _create_reviews() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("reviewer", sa.String(100), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("case_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reviews"),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_reviews_case_id_cases", ondelete="CASCADE"),
        sa.UniqueConstraint("case_id", "case_version", name="uq_reviews_case_id_case_version"),
        sa.CheckConstraint(_VERDICT, name="ck_reviews_verdict"),
        sa.CheckConstraint(_SCORE, name="ck_reviews_score"),
    )


def downgrade() -> None:
    op.drop_table("reviews")
    op.drop_table("mask_revisions")
    op.drop_index("ix_cases_updated_at_id", table_name="cases")
    op.drop_index("ix_cases_reviewer_updated_at_id", table_name="cases")
    op.drop_index("ix_cases_status_updated_at_id", table_name="cases")
    op.drop_table("cases")
