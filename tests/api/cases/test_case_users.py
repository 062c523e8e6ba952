"""Who is who: scrypt hashes in the users file, the one password check, and under which name things are recorded."""

from __future__ import annotations

import base64
import stat

import pytest
from starlette.requests import Request

from api.cases.access import Caller, acting_name, presented_credentials
from api.cases.users import (
    UserDirectory,
    UsersFileError,
    add_user,
    check_user_name,
    hash_password,
    verify_password,
)
from api.errors import ForbiddenError
from unet3d.errors import ParameterError


def test_a_hash_verifies_its_password_only_and_carries_its_parameters():
    encoded = hash_password("correct horse", log2_n=10)
    assert encoded.startswith("$scrypt$ln=10,r=8,p=1$")
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horsE", encoded)
    assert hash_password("correct horse", log2_n=10) != encoded  # a fresh salt every time


def test_malformed_or_absurdly_expensive_hashes_never_verify():
    assert not verify_password("x", "plain-text-password")
    assert not verify_password("x", "$scrypt$ln=40,r=8,p=1$AAAA$AAAA")


def test_add_user_writes_a_private_file_and_replaces_a_password(tmp_path):
    path = tmp_path / "users"
    assert add_user(path, "alice", "one")
    assert add_user(path, "bob", "two")
    assert not add_user(path, "alice", "three")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    directory = UserDirectory(path)
    assert directory.names() == ["bob", "alice"]
    assert directory.verify("alice", "three") and not directory.verify("alice", "one")
    assert not directory.verify("carol", "three")


def test_the_directory_rereads_a_changed_file(tmp_path):
    path = tmp_path / "users"
    add_user(path, "alice", "pw")
    directory = UserDirectory(path)
    assert directory.verify("alice", "pw")
    add_user(path, "alice", "new")
    assert not directory.verify("alice", "pw") and directory.verify("alice", "new")


def test_a_malformed_users_file_says_how_to_fix_it(tmp_path):
    path = tmp_path / "users"
    path.write_text("alice:secret\n")
    with pytest.raises(UsersFileError, match=r"line 1 .*unet3d users add"):
        UserDirectory(path).names()


@pytest.mark.parametrize("name", ["", "  ", "a:b", "tab\there", "x" * 101])
def test_names_that_break_the_file_format_are_refused(name):
    with pytest.raises(ParameterError):
        check_user_name(name)


def request_with(authorization: str) -> Request:
    return Request({"type": "http", "headers": [(b"authorization", authorization.encode())]})


def test_credentials_come_from_basic_or_bearer_name_password():
    basic = base64.b64encode(b"ann:p:w").decode()
    assert presented_credentials(request_with(f"Basic {basic}")) == ("ann", "p:w")
    assert presented_credentials(request_with("Bearer ann:pw")) == ("ann", "pw")
    assert presented_credentials(request_with("Bearer just-a-key")) is None
    assert presented_credentials(request_with("Basic not-base64!")) is None


def test_a_signed_in_user_cannot_record_under_another_name():
    assert acting_name(Caller("ann"), None) == "ann"
    assert acting_name(Caller("ann"), "ann") == "ann"
    with pytest.raises(ForbiddenError, match=r"signed in as 'ann'.*'bob'"):
        acting_name(Caller("ann"), "bob")


def test_without_a_users_file_the_request_names_the_reviewer():
    assert acting_name(Caller(None), " bob ") == "bob"
    with pytest.raises(ParameterError, match="'reviewer' is required"):
        acting_name(Caller(None), None)
