"""A small Hugging Face-compatible hub on 127.0.0.1, serving files the tests make.

It answers the requests huggingface_hub makes to download a model, as huggingface.co does:
  GET  /api/models/{repo}/revision/{rev}[?blobs=true]   model info, siblings with sizes and LFS
  GET  /api/models/{repo}/tree/{rev}[/path]              the tree (what `hf download` lists)
  HEAD /{repo}/resolve/{rev}/{file}                     X-Repo-Commit, ETag, X-Linked-Etag/Size
  GET  /{repo}/resolve/{rev}/{file}                     the bytes, with Range (206)
and, for the ModelScope client, its legacy API:
  GET  /api/v1/models/{repo}/repo/files?Revision=&Recursive=  files with sizes and sha256
  GET  /api/v1/models/{repo}/repo?Revision=&FilePath=         the bytes, with Range (206)
and the hub's errors: 401 RepoNotFound for a missing repository, 404 RevisionNotFound,
404 EntryNotFound, 401 GatedRepo without a token, 401 for a token it does not know.

Every file GET is logged with its Range start and the bytes actually sent, so a test can count
what a resumed download fetched. `hold(path, after)` stalls a file's stream after `after`
bytes until `release()`; `corrupt(path)` serves different bytes than the published hash.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

CHUNK = 64 * 1024


@dataclass
class Repo:
    files: dict[str, bytes]
    lfs: set[str]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    branches: tuple[str, ...] = ("main",)
    gated: bool = False
    gated_in_listing: bool = True  # the model info says so (huggingface.co does)

    def resolve(self, rev: str) -> str | None:
        return self.commit if rev in self.branches or rev == self.commit else None


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data, usedforsecurity=False).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:"
            f"{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n").encode()


@dataclass
class Transfer:
    path: str
    start: int
    sent: int = 0


@dataclass
class LocalHub:
    repos: dict[str, Repo]
    tokens: set[str] = field(default_factory=lambda: {"hf_good_token"})
    transfers: list[Transfer] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    corrupted: set[str] = field(default_factory=set)
    fail_api: int = 0  # answer the next N API calls with 503
    _holds: dict[str, int] = field(default_factory=dict)
    _released: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    # control -------------------------------------------------------------------------------
    def hold(self, path: str, after: int) -> None:
        self._released.clear()
        self._holds[path] = after

    def release(self) -> None:
        self._holds.clear()
        self._released.set()

    def corrupt(self, path: str) -> None:
        self.corrupted.add(path)

    def sent(self, path: str | None = None) -> int:
        with self._lock:
            return sum(t.sent for t in self.transfers if path is None or t.path == path)

    def reset_log(self) -> None:
        with self._lock:
            self.transfers.clear()
            self.requests.clear()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> LocalHub:
        hub = self

        class Handler(_Handler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<kind>revision|tree)/(?P<rest>.+)$")
_MS_FILES = re.compile(r"^/api/v1/models/(?P<repo>[^/]+/[^/]+)/repo/files$")
_MS_FILE = re.compile(r"^/api/v1/models/(?P<repo>[^/]+/[^/]+)/repo$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class _Handler(BaseHTTPRequestHandler):
    state: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    # helpers ---------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers)

    def _authorised(self, repo: Repo | None) -> bool:
        """False after answering 401 for a token the hub does not know, or a gated repo."""
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
        if token is not None and token not in self.state.tokens:
            self._error(401, None, "Invalid credentials in Authorization header")
            return False
        return True

    def _repo(self, name: str) -> Repo | None:
        repo = self.state.repos.get(name)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
        return repo

    # methods ---------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        path, query = split.path, dict(parse_qsl(split.query))
        self.state.requests.append((self.command, path))
        if not self._authorised(None):
            return
        if m := _MS_FILES.match(path):
            self._ms_files(unquote(m["repo"]), query.get("Revision", "master"))
        elif m := _MS_FILE.match(path):
            self._ms_file(unquote(m["repo"]), query.get("Revision", "master"),
                          query.get("FilePath", ""))
        elif m := _API.match(path):
            self._api(unquote(m["repo"]), m["kind"], m["rest"])
        elif m := _RESOLVE.match(path):
            self._resolve(unquote(m["repo"]), unquote(m["rev"]), unquote(m["file"]))
        else:
            self._error(404, None, "not found")

    def _api(self, name: str, kind: str, rest: str) -> None:
        if self.state.fail_api > 0:
            self.state.fail_api -= 1
            self._error(503, None, "Service Unavailable")
            return
        repo = self._repo(name)
        if repo is None:
            return
        rev, _, sub = rest.partition("/")
        rev = unquote(rev)
        commit = repo.resolve(rev)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        if kind == "revision":
            siblings = []
            for p, data in sorted(repo.files.items()):
                sibling: dict[str, object] = {"rfilename": p, "size": len(data)}
                if p in repo.lfs:
                    pointer = lfs_pointer(data)
                    sibling["blobId"] = git_blob_id(pointer)
                    sibling["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(),
                                      "size": len(data), "pointerSize": len(pointer)}
                else:
                    sibling["blobId"] = git_blob_id(data)
                siblings.append(sibling)
            gated = "auto" if repo.gated and repo.gated_in_listing else False
            body = {"id": name, "modelId": name, "sha": commit, "private": False,
                    "gated": gated, "disabled": False,
                    "siblings": siblings, "tags": [], "downloads": 0, "likes": 0}
            self._send(200, json.dumps(body).encode())
            return
        prefix = unquote(sub).strip("/")
        entries = []
        for p, data in sorted(repo.files.items()):
            if prefix and not p.startswith(prefix + "/"):
                continue
            entry: dict[str, object] = {"type": "file", "path": p, "size": len(data)}
            if p in repo.lfs:
                pointer = lfs_pointer(data)
                entry["oid"] = git_blob_id(pointer)
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": len(pointer)}
            else:
                entry["oid"] = git_blob_id(data)
            entries.append(entry)
        self._send(200, json.dumps(entries).encode())

    def _ms_error(self, status: int, message: str) -> None:
        body = {"Code": status, "Message": message, "Success": False, "RequestId": "local"}
        self._send(status, json.dumps(body).encode())

    def _ms_files(self, name: str, rev: str) -> None:
        repo = self.state.repos.get(name)
        if repo is None or repo.resolve(rev) is None:
            self._ms_error(404, f"{name} at {rev} not found")
            return
        files = [{"Name": p.rsplit("/", 1)[-1], "Path": p, "Type": "blob", "Size": len(d),
                  "Sha256": hashlib.sha256(d).hexdigest(), "IsLFS": p in repo.lfs,
                  "Revision": repo.commit} for p, d in sorted(repo.files.items())]
        body = {"Code": 200, "Success": True, "Data": {"Files": files}, "RequestId": "local"}
        self._send(200, json.dumps(body).encode())

    def _ms_file(self, name: str, rev: str, file: str) -> None:
        repo = self.state.repos.get(name)
        if repo is None or repo.resolve(rev) is None or file not in repo.files:
            self._ms_error(404, f"{file} of {name} at {rev} not found")
            return
        self._stream(repo, file, {})

    def _resolve(self, name: str, rev: str, file: str) -> None:
        repo = self._repo(name)
        if repo is None:
            return
        if repo.gated and not self.headers.get("Authorization"):
            self._error(401, "GatedRepo", f"Access to model {name} is restricted. You must have"
                        " access to it and be authenticated to access it. Please log in.")
            return
        commit = repo.resolve(rev)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        data = repo.files.get(file)
        if data is None:
            self._error(404, "EntryNotFound", f"{file} does not exist on {rev}")
            return
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if file in repo.lfs:
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
            headers["ETag"] = f'"{hashlib.sha256(data).hexdigest()}"'
        else:
            headers["ETag"] = f'"{git_blob_id(data)}"'
        if self.command == "HEAD":
            self._send(200, b"", headers, "application/octet-stream", length=len(data))
            return
        self._stream(repo, file, headers)

    def _stream(self, repo: Repo, file: str, headers: dict[str, str]) -> None:
        data = repo.files[file]
        if file in self.state.corrupted:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start, end = 0, len(data) - 1
        status = 200
        if m := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")):
            start = int(m[1])
            end = int(m[2]) if m[2] else end
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        transfer = Transfer(file, start)
        with self.state._lock:
            self.state.transfers.append(transfer)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end + 1 - start))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        position = start
        try:
            while position <= end:
                hold = self.state._holds.get(file)
                if (hold is not None and position >= hold
                        and not self.state._released.wait(0.05)):
                    continue
                piece = data[position:min(end + 1, position + CHUNK)]
                if hold is not None and position < hold < position + len(piece):
                    piece = piece[:hold - position]
                self.wfile.write(piece)
                position += len(piece)
                with self.state._lock:
                    transfer.sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def tiny_model(big_size: int = 24 * 1024 * 1024 + 12345, seed: int = 7) -> Repo:
    """A tiny random model: config, tokenizer files and one multi-MB LFS weights file, plus
    files the loader excludes."""
    import random

    rng = random.Random(seed)
    big = rng.randbytes(big_size)
    files = {
        "config.json": json.dumps({"model_type": "llama", "hidden_size": 8}).encode(),
        "tokenizer.json": json.dumps({"vocab": {f"t{i}": i for i in range(500)}}).encode(),
        "model.safetensors": big,
        "generation_config.json": b'{"do_sample": false}',
        "original/consolidated.00.pth": rng.randbytes(4096),
        "model.Q4_K_M.gguf": rng.randbytes(4096),
    }
    return Repo(files=files, lfs={"model.safetensors", "original/consolidated.00.pth",
                                  "model.Q4_K_M.gguf"})


def wait_until(probe: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(probe) and probe():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s")
