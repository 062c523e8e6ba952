"""The README and docs/ stay true: links resolve, commands parse with the real parsers, names exist in the code."""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import runpy
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    """One shell command from a page: its words (brackets of optional parts removed) and where it stands."""

    where: str
    words: tuple[str, ...]
    is_reference: bool  # `unet3d stats` in a sentence names a command; it is checked with --help, not run

    def __str__(self) -> str:
        return self.where


def _prose(text: str) -> str:
    """The text outside code blocks; the blocks' lines stay as empty lines, so line numbers still hold."""
    return FENCE.sub(lambda block: "\n" * block.group(0).count("\n"), text)


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _fenced(language: set[str]) -> Iterator[tuple[Path, int, str]]:
    for page in PAGES:
        text = page.read_text()
        for block in FENCE.finditer(text):
            if block.group(1) in language:
                yield page, _line_of(text, block.start(2)), block.group(2)


def _words(command: str) -> list[str]:
    words = [w.strip("[]") for w in shlex.split(command, comments=True)]  # [--json]: shown as optional
    while words and ENV_ASSIGNMENT.match(words[0]):
        words.pop(0)
    return [w for w in words if w]


def _shell_lines(block: str, first: int) -> Iterator[tuple[int, str]]:
    """Each command line of a shell block with its line number; a trailing backslash continues the line."""
    pending, start = "", first
    for number, line in enumerate(block.splitlines(), start=first):
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield start, pending + line
        pending = ""


def _commands() -> list[Command]:
    found = []
    for page, first, block in _fenced({"bash", "sh"}):
        for number, line in _shell_lines(block, first):
            for part in re.split(r"&&|\|\||;|\|", line):
                if words := _words(part):
                    found.append(Command(f"{page.name}:{number}", tuple(words), is_reference=False))
    for page in PAGES:
        prose = _prose(page.read_text())
        for span in re.finditer(r"`([^`]+)`", prose):
            if _program(tuple(span.group(1).split())) is None:
                continue
            words = _words(span.group(1))
            if "..." in words:  # `python -m train ...`: names the program, shows no arguments
                words = words[: words.index("...")]
            reference = len(words) <= _program_length(words) + 1  # `unet3d stats` in a sentence
            found.append(Command(f"{page.name}:{_line_of(prose, span.start())}", tuple(words), reference))
    return found


def _program_length(words: list[str]) -> int:
    """How many words name the program: `unet3d` is one, `python -m train` three, `python bench/x.py` two."""
    if words and Path(words[0]).name in {"python", "python3"}:
        return 3 if words[1:2] == ["-m"] else 2
    return 1


def _program(words: tuple[str, ...]) -> tuple[str, list[str]] | None:
    """The entry point a command runs (`unet3d`, a module, a bench script, `curl`) and its arguments, else None."""
    if not words:
        return None
    program = Path(words[0]).name
    if program in {"unet3d", "curl"}:
        return program, list(words[1:])
    if program == "torchrun" and "-m" in words:
        words, program = ("python", *words[words.index("-m") :]), "python"
    if program not in {"python", "python3"} or len(words) < 2:
        return None
    if words[1] == "-m" and words[2:3] in (("train",), ("space.publish",)):
        return words[2], list(words[3:])
    if re.fullmatch(r"bench/\w+\.py", words[1]):
        return words[1], list(words[2:])
    return None


def _entry_point(program: str) -> Callable[[list[str]], object]:
    if program == "unet3d":
        from unet3d.cli import main

        return main
    if program in {"train", "space.publish"}:
        return importlib.import_module("train.__main__" if program == "train" else program).main
    return partial(_run_script, ROOT / program)


def _run_script(path: Path, argv: list[str]) -> object:
    saved = sys.argv, list(sys.path)
    sys.argv = [str(path), *argv]
    sys.path.insert(0, str(path.parent))  # a bench script imports its neighbours, as when run from the shell
    try:
        return runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved


class _StopBeforeRunningError(Exception):
    """Raised right after the real parser accepted the arguments, so that the command itself never runs."""


COMMANDS = _commands()
PARSED = [c for c in COMMANDS if _program(c.words) is not None and c.words[0] != "curl"]
CURLS = [c for c in COMMANDS if c.words[0] == "curl" and any("://" in w for w in c.words)]


@pytest.mark.parametrize("command", PARSED, ids=str)
def test_every_documented_command_parses_with_its_real_argument_parser(command, monkeypatch, capsys):
    program, argv = _program(command.words) or ("", [])
    main = _entry_point(program)
    if command.is_reference:
        argv = [*argv, "--help"]
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse_args(self, args, namespace)
        raise _StopBeforeRunningError

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises((_StopBeforeRunningError, SystemExit)) as stopped:
        main(argv)
    if stopped.type is SystemExit:  # --help ends with 0; a rejected argument with 2 and a usage message
        assert stopped.value.code in (0, None), f"{' '.join(command.words)}: {capsys.readouterr().err}"


def test_the_docs_show_every_command_line_interface_with_arguments():
    shown = {(_program(c.words) or ("",))[0] for c in PARSED if not c.is_reference}
    assert {"unet3d", "train", "space.publish", "bench/compare.py"} <= shown
    assert len(CURLS) >= 4 and sum(not c.is_reference for c in PARSED) >= 30


def _links() -> Iterator[tuple[Path, str]]:
    for page in PAGES:
        for link in LINK.finditer(_prose(page.read_text())):
            target = link.group(1)
            if not re.match(r"^[a-z]+:", target):
                yield page, target


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", _prose(page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_resolves():
    broken = []
    for page, target in _links():
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{page.name}: {target} points at nothing")
        elif anchor and anchor not in _anchors(resolved):
            broken.append(f"{page.name}: {resolved.name} has no heading #{anchor}")
    assert broken == []
    assert len(list(_links())) >= 20


def test_every_repository_path_named_exists():
    named = [
        (page.name, span)
        for page in PAGES
        for span in re.findall(r"`([^`\s<]+)`", _prose(page.read_text()))
        if re.match(r"(\.ci|api|bench|docs|models|scripts|space|tests|train|unet3d)/", span)
    ]
    missing = [f"{page}: {span}" for page, span in named if not any(ROOT.glob(span))]
    assert missing == []
    assert len(named) >= 20


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for page, target in _links() if page.name == "README.md"}
    assert set(PAGES[1:]) <= linked


def test_every_unet3d_variable_named_is_a_setting():
    from pydantic import AliasChoices

    from api.settings import Settings

    known = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [f"UNET3D_{name.upper()}"]
        known |= {c for c in choices if isinstance(c, str)}
    named = {name for page in PAGES for name in re.findall(r"UNET3D_[A-Z0-9_]*[A-Z0-9]", page.read_text())}
    assert named and named <= known, f"not settings: {sorted(named - known)}"
    table = (ROOT / "docs" / "http.md").read_text()
    assert {name for name in known if f"`{name}`" not in table} == set()  # and every setting is documented


def test_every_curl_example_and_route_names_a_route_of_the_app():
    from api.main import app

    schema = app.openapi()
    routes = {(method.upper(), path) for path, operations in schema["paths"].items() for method in operations}
    routes |= {(method, route.path) for route in app.routes for method in getattr(route, "methods", None) or ()}
    checked = 0
    for command in CURLS:
        url = urlparse(next(w for w in command.words if w.startswith("http")))
        words = command.words
        method = words[words.index("-X") + 1] if "-X" in words else "POST" if "-F" in words else "GET"
        template = _route_for(method, url.path, routes)
        assert template is not None, f"{command}: no {method} {url.path}"
        parameters = {p["name"] for p in schema["paths"][template][method.lower()].get("parameters", [])}
        assert set(parse_qs(url.query)) <= parameters, f"{command}: unknown query parameter in {url.query}"
        checked += 1
    documented = re.findall(r"^\| `(GET|POST) (/[^`]*)`", (ROOT / "docs" / "http.md").read_text(), re.M)
    assert len(documented) >= 5 and checked >= 4
    assert {(method, path) for method, path in documented} <= routes


def _route_for(method: str, path: str, routes: set[tuple[str, str]]) -> str | None:
    """The app's route template (`/v1/cases/{case_id}`) that answers `method path`, if any."""
    for known_method, template in routes:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if known_method == method and re.fullmatch(pattern, path):
            return template
    return None


PYTHON = list(_fenced({"python"}))


@pytest.mark.parametrize(("page", "line", "code"), PYTHON, ids=[f"{page.name}:{line}" for page, line, _ in PYTHON])
def test_every_python_example_compiles_and_imports_real_names(page, line, code):
    tree = compile(code, f"{page.name}:{line}", "exec", flags=ast.PyCF_ONLY_AST)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"{page.name}:{line}: {node.module} has no {missing}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


def test_the_readme_quotes_the_shipped_models_measured_figures():
    card = yaml.safe_load((ROOT / "models" / "unet3d-brain-tissue" / "model.yaml").read_text())
    readme = (ROOT / "README.md").read_text()

    def rounded(value: float, places: str) -> str:  # as a person rounds the card's 0.9035: 0.904
        return str(Decimal(str(value)).quantize(Decimal(places), ROUND_HALF_UP))

    for name, measured in card["metrics"]["test"]["per_class"].items():
        dice, iou, hd95 = rounded(measured["dice"], "0.001"), rounded(measured["iou"], "0.001"), measured["hd95_mm"]
        assert f"| {name.replace('_', ' ')} | {dice} | {iou} | {rounded(hd95, '0.01')} |" in readme


def test_the_readme_keeps_the_two_commands_and_the_notices():
    readme = (ROOT / "README.md").read_text()
    assert "scripts/setup.sh && .venv/bin/unet3d serve --port 8000\n" in readme
    assert "\nscripts/test.sh\n" in readme
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "Not for clinical use" in readme
    assert "## License and data notice" in readme and "MNI ICBM152" in readme
