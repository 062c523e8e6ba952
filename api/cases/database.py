"""The review database: SQLite under UNET3D_DATA_DIR by default, PostgreSQL (psycopg 3) by URL; Alembic migrations.

SQLite runs in WAL mode (readers never wait for the writer), with a busy timeout (writers queue instead of failing)
and synchronous=FULL (a commit is on disk before the server acknowledges it). Write transactions start with
`BEGIN IMMEDIATE`: a deferred transaction that read first could not upgrade to a writer once another commit landed
(SQLITE_BUSY without waiting), which is exactly the moment two reviewers save at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..errors import StorageUnavailableError

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_S = 30.0
_WRITE = "unet3d_write"


def database_url(configured: str | None, data_dir: Path) -> str:
    """The SQLAlchemy URL: `configured` (postgresql:// gets the psycopg 3 driver), else SQLite in `data_dir`.

    Raises:
        StorageUnavailableError: the URL is malformed or names a database other than SQLite or PostgreSQL.
    """
    if not configured:
        return f"sqlite:///{Path(data_dir).expanduser().resolve() / 'unet3d.db'}"
    try:
        url = make_url(configured)
    except ArgumentError as e:
        raise StorageUnavailableError(
            "UNET3D_DATABASE_URL is not a database URL: use postgresql://USER:PASSWORD@HOST:PORT/DB or "
            "sqlite:////absolute/path.db"
        ) from e
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise StorageUnavailableError(f"UNET3D_DATABASE_URL names a {backend} database: use postgresql:// or sqlite://")
    return url.render_as_string(hide_password=False)


def open_engine(url: str) -> Engine:
    """An engine for `url`, with SQLite's WAL mode, busy timeout and write-transaction locking set up."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=16)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # the "begin" listener below issues BEGIN itself
        cursor = dbapi_connection.cursor()
        for pragma in (
            f"busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}",
            "journal_mode = WAL",
            "synchronous = FULL",
            "foreign_keys = ON",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get(_WRITE) else "BEGIN")

    return engine


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction (BEGIN IMMEDIATE on SQLite), committed at the end of the block or rolled back."""
    with engine.connect() as connection:
        connection.execution_options(**{_WRITE: True})
        with connection.begin():
            yield connection


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read transaction: one consistent snapshot (SQLite WAL) for the queries in the block."""
    with engine.connect() as connection, connection.begin():
        yield connection


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is there already; safe from several processes).

    Raises:
        StorageUnavailableError: the database cannot be reached or written.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with writing(engine) as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as e:
        raise StorageUnavailableError(f"cannot open the review database: {describe(e)}") from e


def describe(error: SQLAlchemyError) -> str:
    """The driver's first line of an error, without the SQL statement or parameters SQLAlchemy appends."""
    original = getattr(error, "orig", None) or error
    return str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
