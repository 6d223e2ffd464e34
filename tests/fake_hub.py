"""A small fake Hugging Face Hub on 127.0.0.1 for tests (stdlib only), run in a thread of the test process.

It serves the routes huggingface_hub 2.x uses for ``whoami``, ``create_repo``, ``repo_info``/``model_info``,
``list_repo_tree``, ``upload_folder`` without Xet (validate-yaml, preupload, Git LFS batch + PUT + verify,
commit) and ``hf_hub_download``/``snapshot_download`` (HEAD/GET on ``resolve``); dataset repos
(``add_repo(..., repo_type="dataset")``) answer the dataset versions of info, tree, paths-info and resolve,
which is what ``datasets.load_dataset`` reads. HEAD answers carry no body, errors included. Access rules: a token maps
to a user; a user writes to their own namespace and to organizations where their role is "write"; private
repos are visible only to writers. Every request is logged (method, path, authenticated, status).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

LFS_SUFFIXES = (".safetensors", ".png", ".bin", ".pkl")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"


@dataclass
class Repo:
    owner: str
    private: bool
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)  # (sha, {path: content})
    lfs: set[str] = field(default_factory=set)  # paths stored through LFS

    def tree(self, rev: str) -> tuple[str, dict[str, bytes]] | None:
        if rev == "main":
            return self.commits[-1]
        return next((c for c in self.commits if c[0] == rev), None)


@dataclass
class FakeHub:
    tokens: dict[str, str]  # token -> user name
    orgs: dict[str, dict[str, str]] = field(default_factory=dict)  # user -> {org: "read" | "write"}
    fail_commit: set[str] = field(default_factory=set)  # repo ids whose commit endpoint answers 500
    repos: dict[str, Repo] = field(default_factory=dict)
    dataset_repos: dict[str, Repo] = field(default_factory=dict)
    lfs_store: dict[str, bytes] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)
    commit_payloads: list[list[dict]] = field(default_factory=list)

    def start(self) -> FakeHub:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes] | None = None, private: bool = False,
                 repo_type: str = "model") -> Repo:
        repo = Repo(repo_id.split("/")[0], private)
        sha = _sha(repo_id, "init") if repo_type == "model" else _sha(repo_id, repo_type, "init")
        repo.commits.append((sha, {".gitattributes": GITATTRIBUTES, **(files or {})}))
        (self.dataset_repos if repo_type == "dataset" else self.repos)[repo_id] = repo
        return repo

    def add_commit(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model") -> str:
        """A new commit on main with ``files`` added or changed; returns its sha."""
        repo = (self.dataset_repos if repo_type == "dataset" else self.repos)[repo_id]
        sha = _sha(repo_id, repo_type, len(repo.commits))
        repo.commits.append((sha, {**repo.commits[-1][1], **files}))
        return sha

    def can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (user == namespace or self.orgs.get(user, {}).get(namespace) == "write")

    def can_read(self, user: str | None, repo: Repo) -> bool:
        return not repo.private or self.can_write(user, repo.owner) or repo.owner in self.orgs.get(user or "", {})


def _sha(*parts: object) -> str:
    return hashlib.sha1(json.dumps([str(p) for p in parts]).encode()).hexdigest()


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        # ------------------------------------------------------------------ plumbing
        def _user(self) -> tuple[str | None, bool]:
            """(user, bad_token): no header → (None, False); unknown token → (None, True)."""
            auth = self.headers.get("authorization", "")
            if not auth.lower().startswith("bearer "):
                return None, False
            user = hub.tokens.get(auth[7:].strip())
            return user, user is None

        def _read_body(self) -> bytes:
            if self.headers.get("transfer-encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("content-length") or 0))
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)

        def _send(self, status: int, payload: object = None, headers: dict | None = None, raw: bytes | None = None,
                  head: bool = False) -> None:
            data = raw if raw is not None else json.dumps(payload if payload is not None else {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(data)
            hub.log[-1]["status"] = status

        def _error(self, status: int, message: str, code: str | None = None, **extra) -> None:
            headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **extra}
            self._send(status, {"error": message}, headers, head=self.command == "HEAD")

        def _dispatch(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(url.path)
            self.body = self._read_body()  # always consumed: the connection is kept alive
            user, bad = self._user()
            hub.log.append({"method": method, "path": path, "auth": user is not None, "status": None})
            if bad:
                return self._error(401, "Invalid credentials in Authorization header")
            for pattern, name in ROUTES:
                m = re.fullmatch(pattern, path)
                if m and name.split("_")[0] == method.lower():
                    return getattr(self, name)(user, *m.groups(), query=urllib.parse.parse_qs(url.query))
            self._error(404, f"no route {method} {path}")

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def _repo(self, user: str | None, repo_id: str, write: bool = False, kind: str = "models") -> Repo | None:
            repo = (hub.dataset_repos if kind == "datasets" else hub.repos).get(repo_id)
            if repo is None or not hub.can_read(user, repo):
                self._error(401 if user is None else 404, "Repository not found", "RepoNotFound")
                return None
            if write and not hub.can_write(user, repo.owner):
                self._error(403, f"You don't have write access to {repo_id}")
                return None
            return repo

        # ------------------------------------------------------------------ routes
        def get_whoami(self, user, query) -> None:
            if user is None:
                return self._error(401, "Invalid credentials in Authorization header")
            orgs = [{"name": o, "roleInOrg": role} for o, role in hub.orgs.get(user, {}).items()]
            self._send(200, {"type": "user", "name": user, "orgs": orgs})

        def post_create(self, user, query) -> None:
            body = json.loads(self.body)
            namespace = body.get("organization") or user
            repo_id = f"{namespace}/{body['name']}"
            if user is None:
                return self._error(401, "Invalid credentials in Authorization header")
            if not hub.can_write(user, namespace):
                return self._error(403, f"You don't have the rights to create a model under the namespace "
                                        f"\"{namespace}\"")
            if repo_id in hub.repos:
                return self._send(409, {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"})
            hub.add_repo(repo_id, private=body.get("visibility") == "private" or bool(body.get("private")))
            self._send(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

        def post_validate_yaml(self, user, query) -> None:
            content = json.loads(self.body)["content"]
            match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
            try:
                yaml.safe_load(match.group(1) if match else "")
            except yaml.YAMLError as exc:
                return self._send(400, {"errors": [{"message": str(exc)}], "warnings": []})
            self._send(200, {"errors": [], "warnings": []})

        def get_info(self, user, repo_id, rev, query, kind: str = "models") -> None:
            repo = self._repo(user, repo_id, kind=kind)
            if repo is None:
                return
            found = repo.tree(urllib.parse.unquote(rev or "main"))
            if found is None:
                return self._error(404, "Invalid rev id", "RevisionNotFound")
            sha, files = found
            self._send(200, {"id": repo_id, "sha": sha, "private": repo.private, "author": repo.owner,
                             "siblings": [{"rfilename": p} for p in sorted(files)]})

        def get_tree(self, user, repo_id, rev, sub, query, kind: str = "models") -> None:
            repo = self._repo(user, repo_id, kind=kind)
            found = repo and repo.tree(urllib.parse.unquote(rev))
            if repo is None:
                return
            if found is None:
                return self._error(404, "Invalid rev id", "RevisionNotFound")
            prefix = (sub or "").strip("/")
            recursive = query.get("recursive", ["false"])[0].lower() == "true" or (not prefix and kind == "models")
            entries = [e for e in self._entries(repo, found[1]) if _under(e["path"], prefix, recursive)]
            if prefix and not entries:
                return self._error(404, f"Path {prefix} not found", "EntryNotFound")
            self._send(200, entries)

        def _entries(self, repo: Repo, files: dict[str, bytes]) -> list[dict]:
            entries, folders = [], set()
            for p, content in sorted(files.items()):
                folders.update("/".join(p.split("/")[:i]) for i in range(1, p.count("/") + 1))
                entry = {"type": "file", "path": p, "size": len(content), "oid": _git_oid(content)}
                if p in repo.lfs:
                    entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content),
                                    "pointerSize": 134}
                entries.append(entry)
            return entries + [{"type": "directory", "path": d, "oid": _sha(d)} for d in sorted(folders)]

        def post_paths_info(self, user, repo_id, rev, query) -> None:
            repo = self._repo(user, repo_id, kind="datasets")
            found = repo and repo.tree(urllib.parse.unquote(rev))
            if repo is None:
                return
            if found is None:
                return self._error(404, "Invalid rev id", "RevisionNotFound")
            body = self.body.decode()
            wanted = (json.loads(body) if body.startswith("{") else urllib.parse.parse_qs(body)).get("paths", [])
            self._send(200, [e for e in self._entries(repo, found[1]) if e["path"] in wanted])

        def post_preupload(self, user, repo_id, rev, query) -> None:
            repo = self._repo(user, repo_id, write=True)
            if repo is None:
                return
            current = repo.tree("main")[1]
            files = [{"path": f["path"], "shouldIgnore": False,
                      "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10_000_000 else "regular",
                      "oid": _git_oid(current[f["path"]]) if f["path"] in current else None}
                     for f in json.loads(self.body)["files"]]
            self._send(200, {"files": files})

        def post_lfs_batch(self, user, repo_id, query) -> None:
            repo = self._repo(user, repo_id, write=True)
            if repo is None:
                return
            objects = []
            for obj in json.loads(self.body)["objects"]:
                actions = {} if obj["oid"] in hub.lfs_store else {"actions": {
                    "upload": {"href": f"{hub.url}/lfs-storage/{obj['oid']}"},
                    "verify": {"href": f"{hub.url}/{repo_id}.git/info/lfs/objects/verify"}}}
                objects.append({"oid": obj["oid"], "size": obj["size"], **actions})
            self._send(200, {"transfer": "basic", "objects": objects})

        def put_lfs_storage(self, user, oid, query) -> None:
            data = self.body
            if hashlib.sha256(data).hexdigest() != oid:
                return self._error(400, "sha256 mismatch")
            hub.lfs_store[oid] = data
            self._send(200, raw=b"")

        def post_lfs_verify(self, user, repo_id, query) -> None:
            oid = json.loads(self.body)["oid"]
            self._send(200 if oid in hub.lfs_store else 404, {})

        def post_commit(self, user, repo_id, rev, query) -> None:
            repo = self._repo(user, repo_id, write=True)
            if repo is None:
                return
            if repo_id in hub.fail_commit:
                return self._error(500, "Internal Error - We're working hard to fix this as soon as possible!")
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
            files = dict(repo.tree("main")[1])
            for item in lines:
                key, value = item["key"], item["value"]
                if key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                    repo.lfs.discard(value["path"])
                elif key == "lfsFile":
                    if value["oid"] not in hub.lfs_store:
                        return self._error(400, f"LFS object {value['oid']} was not uploaded")
                    files[value["path"]] = hub.lfs_store[value["oid"]]
                    repo.lfs.add(value["path"])
                elif key in ("deletedFile", "deletedFolder"):
                    files = {p: c for p, c in files.items()
                             if p != value["path"] and not p.startswith(value["path"].rstrip("/") + "/")}
            sha = _sha(repo_id, len(repo.commits), sorted(files))
            repo.commits.append((sha, files))
            hub.commit_payloads.append(lines)
            self._send(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha, "success": True})

        def _serve_file(self, user, repo_id, rev, filename, head: bool, kind: str = "models") -> None:
            repo = self._repo(user, repo_id, kind=kind)
            if repo is None:
                return
            found = repo.tree(urllib.parse.unquote(rev))
            if found is None:
                return self._error(404, "Invalid rev id", "RevisionNotFound")
            sha, files = found
            if filename not in files:
                return self._error(404, "Entry not found", "EntryNotFound", **{"X-Repo-Commit": sha})
            content = files[filename]
            headers = {"X-Repo-Commit": sha, "ETag": f'"{_git_oid(content)}"'}
            if filename in repo.lfs:
                headers.update({"X-Linked-Etag": f'"{hashlib.sha256(content).hexdigest()}"',
                                "X-Linked-Size": str(len(content))})
            self._send(200, raw=content, headers=headers, head=head)

        def get_resolve(self, user, repo_id, rev, filename, query) -> None:
            self._serve_file(user, repo_id, rev, filename, head=False)

        def head_resolve(self, user, repo_id, rev, filename, query) -> None:
            self._serve_file(user, repo_id, rev, filename, head=True)

        # dataset repos: the same routes under /api/datasets and /datasets
        def get_dataset_info(self, user, repo_id, rev, query) -> None:
            self.get_info(user, repo_id, rev, query, kind="datasets")

        def get_dataset_tree(self, user, repo_id, rev, sub, query) -> None:
            self.get_tree(user, repo_id, rev, sub, query, kind="datasets")

        def get_dataset_resolve(self, user, repo_id, rev, filename, query) -> None:
            self._serve_file(user, repo_id, rev, filename, head=False, kind="datasets")

        def head_dataset_resolve(self, user, repo_id, rev, filename, query) -> None:
            self._serve_file(user, repo_id, rev, filename, head=True, kind="datasets")

    return Handler


def _under(path: str, prefix: str, recursive: bool) -> bool:
    """Is ``path`` listed by a tree call on folder ``prefix`` (directly, or anywhere below when recursive)?"""
    if prefix and not path.startswith(prefix + "/"):
        return False
    rest = path[len(prefix) + 1:] if prefix else path
    return recursive or "/" not in rest


_REPO = r"([\w.-]+/[\w.-]+)"
ROUTES = [
    (r"/api/whoami-v2", "get_whoami"),
    (r"/api/repos/create", "post_create"),
    (r"/api/validate-yaml", "post_validate_yaml"),
    (rf"/api/models/{_REPO}(?:/revision/(.+))?", "get_info"),
    (rf"/api/models/{_REPO}/tree/([^/]+)(/.*)?", "get_tree"),
    (rf"/api/models/{_REPO}/preupload/(.+)", "post_preupload"),
    (rf"/api/models/{_REPO}/commit/(.+)", "post_commit"),
    (rf"/{_REPO}\.git/info/lfs/objects/batch", "post_lfs_batch"),
    (rf"/{_REPO}\.git/info/lfs/objects/verify", "post_lfs_verify"),
    (r"/lfs-storage/([0-9a-f]{64})", "put_lfs_storage"),
    (rf"/{_REPO}/resolve/([^/]+)/(.+)", "get_resolve"),
    (rf"/{_REPO}/resolve/([^/]+)/(.+)", "head_resolve"),
    (rf"/api/datasets/{_REPO}(?:/revision/(.+))?", "get_dataset_info"),
    (rf"/api/datasets/{_REPO}/tree/([^/]+)(/.*)?", "get_dataset_tree"),
    (rf"/api/datasets/{_REPO}/paths-info/([^/]+)", "post_paths_info"),
    (rf"/datasets/{_REPO}/resolve/([^/]+)/(.+)", "get_dataset_resolve"),
    (rf"/datasets/{_REPO}/resolve/([^/]+)/(.+)", "head_dataset_resolve"),
]
