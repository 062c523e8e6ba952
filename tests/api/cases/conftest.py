"""Fixtures of the review-storage tests: a real PostgreSQL cluster for the session, and a case service on SQLite and
on PostgreSQL (`backend` parametrises every test that uses `database_url`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgcluster import PostgresCluster, find_bindir

from api.cases.database import database_url as resolve_url
from api.cases.database import migrate, open_engine
from api.cases.files import FileStore
from api.cases.service import CaseService
from api.cases.store import CaseStore
from api.service import Limits

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL server of its own for this test session (skipped without the binaries, except in CI)."""
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL's server binaries are missing: apt-get install postgresql (scripts/test.sh does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    cluster = PostgresCluster(bindir).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on `backend`."""
    if backend == "sqlite":
        return resolve_url(None, tmp_path)
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return resolve_url(cluster.create_database(), tmp_path)


@pytest.fixture
def cases(database_url: str, tmp_path: Path) -> Iterator[CaseService]:
    """A migrated case service with its files under tmp_path."""
    engine = open_engine(database_url)
    migrate(engine)
    files = FileStore(tmp_path / "files")
    files.open()
    service = CaseService(CaseStore(engine), files, Limits(max_voxels=10**7, max_decompressed_bytes=2**30))
    yield service
    service.close()
