"""Which database a deployment gets, and a server that cannot open its review storage refusing to start."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.cases.database import database_url
from api.errors import StorageUnavailableError


def test_the_default_database_is_sqlite_in_the_data_folder(tmp_path):
    assert database_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'unet3d.db'}"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_postgresql_urls_get_the_psycopg_3_driver(scheme):
    assert (
        database_url(f"{scheme}://ann:pw@db:5432/reviews", Path(".")) == "postgresql+psycopg://ann:pw@db:5432/reviews"
    )


@pytest.mark.parametrize(("url", "expected"), [("mysql://x@y/z", "a mysql database"), ("not a url", "not a database")])
def test_other_databases_are_refused_with_the_accepted_forms(url, expected):
    with pytest.raises(StorageUnavailableError, match=expected):
        database_url(url, Path("."))


def test_a_server_whose_data_folder_is_not_writable_exits_with_one_line(run_until_exit, tiny_model_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    finished = run_until_exit({"UNET3D_MODEL": str(tiny_model_dir), "UNET3D_DATA_DIR": str(blocker / "data")})
    assert finished.returncode != 0
    assert "the review storage cannot open" in finished.stderr and "UNET3D_DATA_DIR" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_a_server_with_a_broken_users_file_exits_with_one_line(run_until_exit, tiny_model_dir, tmp_path):
    users = tmp_path / "users"
    users.write_text("ann:plain-password\n")
    finished = run_until_exit({"UNET3D_MODEL": str(tiny_model_dir), "UNET3D_USERS_FILE": str(users)})
    assert finished.returncode != 0 and "unet3d users add" in finished.stderr and "Traceback" not in finished.stderr
