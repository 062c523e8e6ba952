"""`unet3d review ...` and `unet3d users ...`: the commands the serve extra adds to the `unet3d` console script.

unet3d/cli.py finds them through the `unet3d.commands` entry points (or this module by name) and hands over the
arguments after the command word. Settings come from the same UNET3D_* environment as the server's.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from unet3d.errors import ParameterError, Unet3dError

from ..errors import ServiceError
from ..settings import Settings
from .users import UserDirectory, add_user, check_user_name

# `unet3d users ...` imports no more than it needs: the database, torch and the server code load for `review` only.

logger = logging.getLogger(__name__)


def review_main(argv: Sequence[str]) -> int:
    """`unet3d review import DIR` and `unet3d review migrate`."""
    parser = argparse.ArgumentParser(prog="unet3d review", description="Review cases in the database "
                                     "(UNET3D_DATABASE_URL, default SQLite under UNET3D_DATA_DIR).")  # fmt: skip
    sub = parser.add_subparsers(dest="action", required=True)
    importing = sub.add_parser(
        "import",
        help="add the cases of a batch run (DIR/results.csv) or of <stem>.nii.gz + <stem>_mask.nii.gz pairs",
    )
    importing.add_argument("folder", metavar="DIR")
    importing.set_defaults(handler=_import)
    migrating = sub.add_parser("migrate", help="bring the database schema up to date (the server does it at start)")
    migrating.set_defaults(handler=_migrate)
    return _run(parser, argv)


def users_main(argv: Sequence[str]) -> int:
    """`unet3d users add NAME` and `unet3d users list`."""
    parser = argparse.ArgumentParser(prog="unet3d users", description="The reviewers of UNET3D_USERS_FILE.")
    parser.add_argument("--users-file", default=None, help="default: $UNET3D_USERS_FILE")
    sub = parser.add_subparsers(dest="action", required=True)
    adding = sub.add_parser("add", help="add a user, or set a new password for one")
    adding.add_argument("name", metavar="NAME")
    adding.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    adding.set_defaults(handler=_add_user)
    listing = sub.add_parser("list", help="print the user names")
    listing.set_defaults(handler=_list_users)
    return _run(parser, argv)


def _run(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.handler(args))
    except (Unet3dError, ServiceError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in e.errors())
        print(f"{parser.prog}: error: invalid UNET3D_* settings: {problems}", file=sys.stderr)
        return 1


def _import(args: argparse.Namespace) -> int:
    from .importer import import_cases, plan_import
    from .service import CaseService

    settings = Settings()
    items, refused = plan_import(Path(args.folder))
    service = CaseService.open(settings)
    try:
        report = import_cases(service, items, card_names=_card_names(settings))
    finally:
        service.close()
    for name, reason in [*refused, *report.refused]:
        print(f"unet3d review: not imported: {name}: {reason}", file=sys.stderr)
    print(
        f"imported {len(report.imported)} cases, {len(report.present)} present already, "
        f"{len(refused) + len(report.refused)} not imported"
    )
    return 1 if refused or report.refused else 0


def _migrate(args: argparse.Namespace) -> int:
    from .database import database_url, migrate, open_engine

    settings = Settings()
    configured = settings.database_url.get_secret_value() if settings.database_url else None
    engine = open_engine(database_url(configured, settings.data_dir))
    try:
        migrate(engine)
    finally:
        engine.dispose()
    print("the review database is up to date")
    return 0


def _card_names(settings: Settings) -> list[str] | None:
    """The served model's class names, for masks without a results.csv naming them (None when unavailable)."""
    from unet3d.card import load_card
    from unet3d.hub import resolve_source

    try:
        source = resolve_source(settings.model, settings.model_revision)
        return [c.name for c in load_card(source.directory / "model.yaml").classes]
    except (Unet3dError, OSError) as e:
        logger.warning("classes are named class_0, class_1, ...: the model card is not available (%s)", e)
        return None


def _users_file(args: argparse.Namespace) -> str:
    path = args.users_file or Settings().users_file
    if not path:
        raise ParameterError("no users file: set UNET3D_USERS_FILE or pass --users-file PATH")
    return str(path)


def _add_user(args: argparse.Namespace) -> int:
    name = check_user_name(args.name)
    path = Path(_users_file(args))
    password = _read_password(name, from_stdin=args.password_stdin)
    is_new = add_user(path, name, password)
    print(f"{'added' if is_new else 'changed the password of'} {name} in {path}")
    return 0


def _read_password(name: str, *, from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise ParameterError("no terminal to ask for the password: pipe it in with --password-stdin")
    first = getpass.getpass(f"password for {name}: ")
    if first != getpass.getpass("again: "):
        raise ParameterError("the two passwords differ: nothing was changed")
    return first


def _list_users(args: argparse.Namespace) -> int:
    for name in UserDirectory(Path(_users_file(args))).names():
        print(name)
    return 0
