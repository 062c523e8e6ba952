"""FakeHub: a loopback HTTP server speaking enough of the Hugging Face Hub protocol for huggingface_hub 2.4.

Point a *subprocess* at it with `HF_ENDPOINT=hub.url` (huggingface_hub reads its environment at import time), and the
real client downloads, resolves revisions and pushes through it. Verified request shapes: ../shared/notes/
stack-verified.md §4 and huggingface_hub's `file_download.py`, `_snapshot_download.py`, `_commit_api.py`,
`_upload_pipeline.py`.

Read side: `GET|HEAD /{repo}/resolve/{rev}/{path}` (`X-Repo-Commit`, `ETag`: git sha1, or sha256 for LFS files),
`GET /api/{type}s/{repo}[/revision/{rev}]`, `GET /api/{type}s/{repo}/tree/{rev}[/{path}]`, `GET .../refs`.
Write side: `POST /api/repos/create`, `POST .../branch/{name}`, `POST /api/validate-yaml`, a Space's
`GET/POST/DELETE /api/spaces/{repo}/variables`,
`POST .../preupload/{rev}`, `POST .../commit/{rev}` (NDJSON). The preupload answer asks for every file as a
"regular" upload, so its bytes arrive base64-encoded inside the commit: the real Hub would route `*.safetensors`
through LFS/Xet storage, a separate protocol this fake does not speak. Files are still *stored* as LFS
(sha256 ETag, `lfs` tree entry) when their suffix is in `LFS_SUFFIXES`, as the Hub's `.gitattributes` does.

Errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound) as the Hub does. Private repos need
`Authorization: Bearer <token>` for a token in `tokens`; every write needs one whose user owns the namespace.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gz", ".nii", ".npy", ".png")
GITATTRIBUTES = b"".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n".encode() for suffix in LFS_SUFFIXES)
REPO_TYPES = ("model", "dataset", "space")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, which the Hub reports as a regular file's `oid` and `ETag`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    message: str
    parent: str | None


@dataclass
class Repo:
    repo_id: str
    repo_type: str = "model"
    private: bool = False
    sdk: str | None = None
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)  # a Space's variables (its build arguments)

    def resolve(self, revision: str) -> str | None:
        """Branch, tag, full commit sha or a unique sha prefix (≥ 7 hex) → commit sha."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if revision in self.commits:
            return revision
        if len(revision) >= 7:
            matches = [sha for sha in self.commits if sha.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: str
    authorization: str | None


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class FakeHub:
    """An in-process Hub on 127.0.0.1:<free port>; start() it, point `HF_ENDPOINT` at `url`, stop() it.

    Args:
        tokens: accepted bearer tokens → the user name each authenticates (that user owns its namespace).
    """

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.tokens = dict(tokens or {})
        self.repos: dict[tuple[str, str], Repo] = {}
        self.log: list[LoggedRequest] = []
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self._counter = 0

    # ------------------------------------------------------------------ state, for tests

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False, sdk: str | None = None):
        """Create a repo with one initial commit holding `.gitattributes`, as the Hub does."""
        with self._lock:
            key = (repo_type, repo_id)
            if key not in self.repos:
                self.repos[key] = Repo(repo_id, repo_type, private, sdk)
                self.add_commit(repo_id, {".gitattributes": GITATTRIBUTES}, repo_type=repo_type, message="initial")
            return self.repos[key]

    def add_commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        branch: str = "main",
        repo_type: str = "model",
        private: bool = False,
        message: str = "update",
        deleted: tuple[str, ...] = (),
    ) -> str:
        """Commit `files` (added or replaced) on top of `branch`; creates repo and branch when missing. Returns sha."""
        with self._lock:
            repo = self.repos.get((repo_type, repo_id)) or self.create_repo(
                repo_id, repo_type=repo_type, private=private
            )
            parent = repo.branches.get(branch) or repo.branches.get("main")
            tree = dict(repo.commits[parent].files) if parent else {}
            for path in deleted:
                tree.pop(path, None)
            tree.update(files)
            self._counter += 1
            digest = hashlib.sha1(f"{repo_type}/{repo_id}@{parent}#{self._counter}:{message}".encode())
            for path in sorted(tree):
                digest.update(path.encode() + git_blob_sha1(tree[path]).encode())
            sha = digest.hexdigest()
            repo.commits[sha] = Commit(sha, tree, message, parent)
            repo.branches[branch] = sha
            return sha

    def add_tag(self, repo_id: str, tag: str, revision: str = "main", *, repo_type: str = "model") -> str:
        with self._lock:
            repo = self.repos[(repo_type, repo_id)]
            sha = repo.resolve(revision)
            if sha is None:
                raise KeyError(revision)
            repo.tags[tag] = sha
            return sha

    def files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, bytes]:
        """The tree at `revision` (path → bytes)."""
        with self._lock:
            repo = self.repos[(repo_type, repo_id)]
            sha = repo.resolve(revision)
            if sha is None:
                raise KeyError(revision)
            return dict(repo.commits[sha].files)

    def requests(self, method: str | None = None, contains: str = "") -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.log if (method is None or r.method == method) and contains in r.path]

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    # ------------------------------------------------------------------ server lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not started")
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close kept-alive connections (httpx2 would otherwise keep using them)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ request handling

    def _authenticated_user(self, authorization: str | None) -> str | None:
        if authorization and authorization.startswith("Bearer "):
            return self.tokens.get(authorization.removeprefix("Bearer ").strip())
        return None

    def _readable_repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and user != repo_id.split("/")[0]):
            # The Hub answers 401 for a private repo without credentials and 404 for a missing one; both say
            # RepoNotFound so that nobody learns whether a private repo exists.
            status = 401 if user is None else 404
            raise HubError(status, "RepoNotFound", "Repository not found")
        return repo

    def _writable_repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        self._check_namespace(repo_id, user)
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "RepoNotFound", "Repository not found")
        return repo

    @staticmethod
    def _check_namespace(repo_id: str, user: str | None) -> None:
        if user is None:
            raise HubError(401, None, "Invalid username or password.")
        if repo_id.split("/")[0] != user:
            raise HubError(403, None, f"You don't have the rights to create or write to {repo_id}")

    @staticmethod
    def _commit_of(repo: Repo, revision: str) -> Commit:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo.commits[sha]

    def handle(self, method: str, raw_path: str, authorization: str | None, body: bytes) -> Response:
        parts = urlsplit(raw_path)
        with self._lock:
            self.log.append(LoggedRequest(method, parts.path, parts.query, authorization))
        user = self._authenticated_user(authorization)
        segments = [unquote(s) for s in parts.path.strip("/").split("/")]
        try:
            with self._lock:
                if segments[:1] == ["api"]:
                    return self._api(method, segments[1:], parse_qs(parts.query), user, body)
                if "resolve" in segments and method in ("GET", "HEAD"):
                    return self._resolve(segments, user, head=method == "HEAD")
        except HubError as e:
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            if e.commit:
                headers["X-Repo-Commit"] = e.commit
            return Response(e.status, {"error": e.message}, headers)
        return Response(404, {"error": f"no route for {method} {parts.path}"})

    def _resolve(self, segments: list[str], user: str | None, *, head: bool) -> Response:
        index = segments.index("resolve")
        prefix = segments[: index - 2]
        repo_type = prefix[0][:-1] if prefix and prefix[0] in ("datasets", "spaces") else "model"
        repo = self._readable_repo(repo_type, "/".join(segments[index - 2 : index]), user)
        commit = self._commit_of(repo, segments[index + 1])
        path = "/".join(segments[index + 2 :])
        if path not in commit.files:
            raise HubError(404, "EntryNotFound", f"{path} does not exist at {commit.sha}", commit=commit.sha)
        data = commit.files[path]
        etag = hashlib.sha256(data).hexdigest() if is_lfs(path) else git_blob_sha1(data)
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}
        return Response(200, data, headers, head=head, length=len(data))

    def _api(self, method: str, segments: list[str], query: dict[str, list[str]], user: str | None, body: bytes):
        if method == "POST" and segments == ["repos", "create"]:
            return self._api_create_repo(json.loads(body or b"{}"), user)
        if method == "POST" and segments == ["validate-yaml"]:
            return self._api_validate_yaml(json.loads(body or b"{}"))
        if method == "GET" and segments == ["whoami-v2"]:
            if user is None:
                raise HubError(401, None, "Invalid credentials in Authorization header")
            return Response(200, {"type": "user", "name": user, "orgs": [], "auth": {"type": "access_token"}})
        if len(segments) < 3 or segments[0] not in ("models", "datasets", "spaces"):
            return Response(404, {"error": "not found"})
        repo_type, repo_id, rest = segments[0][:-1], "/".join(segments[1:3]), segments[3:]
        if method == "GET" and not rest:
            return self._api_info(self._readable_repo(repo_type, repo_id, user), "main")
        if method == "GET" and rest[:1] == ["revision"] and len(rest) >= 2:
            return self._api_info(self._readable_repo(repo_type, repo_id, user), "/".join(rest[1:]))
        if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
            repo = self._readable_repo(repo_type, repo_id, user)
            return self._api_tree(repo, rest[1], "/".join(rest[2:]), query)
        if method == "GET" and rest == ["refs"]:
            return self._api_refs(self._readable_repo(repo_type, repo_id, user))
        if method == "POST" and rest[:1] == ["branch"] and len(rest) >= 2:
            return self._api_create_branch(self._writable_repo(repo_type, repo_id, user), "/".join(rest[1:]), body)
        if method == "POST" and rest[:1] == ["preupload"] and len(rest) >= 2:
            return self._api_preupload(self._writable_repo(repo_type, repo_id, user), "/".join(rest[1:]), body)
        if method == "POST" and rest[:1] == ["commit"] and len(rest) >= 2:
            return self._api_commit(self._writable_repo(repo_type, repo_id, user), "/".join(rest[1:]), body)
        if repo_type == "space" and rest == ["variables"]:
            return self._api_variables(self._writable_repo(repo_type, repo_id, user), method, body)
        return Response(404, {"error": "not found"})

    @staticmethod
    def _api_variables(repo: Repo, method: str, body: bytes) -> Response:
        """GET lists, POST {key, value} sets, DELETE {key} removes; each answers with all variables."""
        payload = json.loads(body or b"{}")
        if method == "POST":
            repo.variables[payload["key"]] = payload["value"]
        elif method == "DELETE":
            repo.variables.pop(payload["key"], None)
        return Response(200, {key: {"value": value} for key, value in repo.variables.items()})

    def _api_info(self, repo: Repo, revision: str) -> Response:
        commit = self._commit_of(repo, revision)
        info: dict[str, Any] = {
            "id": repo.repo_id,
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "sha": commit.sha,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }
        if repo.repo_type == "space":
            info["sdk"] = repo.sdk
        return Response(200, info)

    def _api_tree(self, repo: Repo, revision: str, folder: str, query: dict[str, list[str]]) -> Response:
        commit = self._commit_of(repo, revision)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        entries, folders = [], set()
        for path in sorted(commit.files):
            if not path.startswith(prefix):
                continue
            relative = path[len(prefix) :]
            if "/" in relative and not recursive:
                folders.add(prefix + relative.split("/")[0])
                continue
            entries.append(_tree_entry(path, commit.files[path]))
        entries += [{"type": "directory", "path": f, "oid": "0" * 40, "size": 0} for f in sorted(folders)]
        if prefix and not entries:
            raise HubError(404, "EntryNotFound", f"{folder} does not exist at {commit.sha}", commit=commit.sha)
        return Response(200, entries)

    @staticmethod
    def _api_refs(repo: Repo) -> Response:
        def ref(kind: str, name: str, sha: str) -> dict[str, str]:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}

        return Response(
            200,
            {
                "branches": [ref("heads", n, s) for n, s in sorted(repo.branches.items())],
                "tags": [ref("tags", n, s) for n, s in sorted(repo.tags.items())],
                "converts": [],
            },
        )

    def _api_create_repo(self, payload: dict[str, Any], user: str | None) -> Response:
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, None, f"invalid repo type {repo_type!r}")
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        self._check_namespace(repo_id, user)
        if repo_type == "space" and not payload.get("sdk"):
            raise HubError(400, None, "a Space needs an sdk")
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.url}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return Response(409, {"error": "You already created this model repo", "url": url})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self.create_repo(repo_id, repo_type=repo_type, private=private, sdk=payload.get("sdk"))
        return Response(200, {"url": url, "name": repo_id, "id": hashlib.md5(repo_id.encode()).hexdigest()[:24]})

    def _api_create_branch(self, repo: Repo, branch: str, body: bytes) -> Response:
        if branch in repo.branches:
            raise HubError(409, None, f"Reference already exists: refs/heads/{branch}")
        start = json.loads(body or b"{}").get("startingPoint") or "main"
        repo.branches[branch] = self._commit_of(repo, start).sha
        return Response(200, {})

    @staticmethod
    def _api_validate_yaml(payload: dict[str, Any]) -> Response:
        content = str(payload.get("content", ""))
        if content.startswith("---"):
            header = content[3:].split("\n---", 1)[0]
            try:
                metadata = yaml.safe_load(header)
            except yaml.YAMLError as e:
                return Response(400, {"errors": [{"message": f"Invalid YAML in README.md: {e}"}], "warnings": []})
            if metadata is not None and not isinstance(metadata, dict):
                return Response(400, {"errors": [{"message": "README.md metadata must be a mapping"}], "warnings": []})
        return Response(200, {"errors": [], "warnings": []})

    def _api_preupload(self, repo: Repo, revision: str, body: bytes) -> Response:
        tree = self._commit_of(repo, revision).files if repo.resolve(revision) else {}
        answer = []
        for item in json.loads(body)["files"]:
            current = tree.get(item["path"])
            answer.append(
                {
                    "path": item["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(current) if current is not None else None,
                }
            )
        return Response(200, {"files": answer, "commitOid": repo.resolve(revision)})

    def _api_commit(self, repo: Repo, revision: str, body: bytes) -> Response:
        if repo.resolve(revision) is None or revision not in repo.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        header: dict[str, Any] = {}
        added: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file" and value.get("encoding") == "base64":
                added[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deleted.append(value["path"])
            else:
                raise HubError(400, None, f"unsupported commit operation {key!r}")
        parent = header.get("parentCommit")
        if parent and repo.resolve(revision) != parent:
            raise HubError(412, None, "A commit has happened since. Please refresh and try again.")
        sha = self.add_commit(
            repo.repo_id,
            added,
            branch=revision,
            repo_type=repo.repo_type,
            message=str(header.get("summary", "")),
            deleted=tuple(deleted),
        )
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return Response(
            200, {"success": True, "commitOid": sha, "commitUrl": f"{self.url}/{prefix}{repo.repo_id}/commit/{sha}"}
        )


def _tree_entry(path: str, data: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
    if is_lfs(path):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    head: bool = False
    length: int | None = None

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"  # keep-alive, as the Hub; FakeHub.stop() closes what stays open

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._sockets.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.fake._lock:
                self.fake._sockets.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the name of the method it overrides)
        pass

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        response = self.fake.handle(method, self.path, self.headers.get("Authorization"), body)
        payload = response.payload()
        self.send_response(response.status)
        if not isinstance(response.body, bytes):
            self.send_header("Content-Type", "application/json")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(response.length if response.length is not None else len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


# ---------------------------------------------------------------------- pointing a client process at a FakeHub

MODEL_FILES = ("config.json", "model.safetensors", "model.yaml", "README.md")
BRAIN_MASK_FILES = ("brain_mask/config.json", "brain_mask/model.safetensors", "brain_mask/model.yaml")


def model_files(directory: Path) -> dict[str, bytes]:
    """The files of a unet3d model directory (a chained model's brain_mask/ too), as a FakeHub commit takes them."""
    names = (*MODEL_FILES, *BRAIN_MASK_FILES)
    return {name: (directory / name).read_bytes() for name in names if (directory / name).exists()}


def hub_env(
    url: str, hf_home: Path, *, offline: bool = False, token: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a client process that talks to the Hub at `url` and caches under `hf_home`.

    huggingface_hub reads these at import time, which is why Hub clients in tests are subprocesses. Inherited
    HF_* and UNET3D_* variables are dropped so that a developer's token or cache never leaks into a test.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_", "UNET3D_"))}
    env.update(
        HF_ENDPOINT=url,
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1" if offline else "0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        GRADIO_ANALYTICS_ENABLED="False",
        PYTHONUNBUFFERED="1",
    )
    if token is not None:
        env["HF_TOKEN"] = token
    env.update(extra)
    return env


def unet3d_command(*args: str) -> list[str]:
    """The `unet3d` console script of the running interpreter's environment."""
    script = Path(sys.executable).with_name("unet3d")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "import sys; from unet3d.cli import main; sys.exit(main())", *args]


def run(command: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


# ---------------------------------------------------------------------- the service, as a real uvicorn process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def uvicorn_service(env: dict[str, str], cwd: Path, *, timeout: float = 90) -> Iterator[str]:
    """Run `uvicorn api.main:app` on a free loopback port until /health answers 200; yields the base URL.

    The process runs in `cwd` (uvicorn imports `api` from there) and is stopped on exit. Its output is kept in a
    temporary file and becomes part of the error when it fails to start.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile() as log:

        def failure(reason: str) -> RuntimeError:
            log.seek(0)
            return RuntimeError(f"{reason}:\n{log.read().decode(errors='replace')[-4000:]}")

        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise failure(f"uvicorn exited with {process.returncode}")
                if time.monotonic() > deadline:
                    raise failure(f"/health did not answer within {timeout} s")
                with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())
