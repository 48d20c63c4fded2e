"""The two hubs, each through its own library: listing a revision's files with sizes and
hashes, and fetching one file into a partial file, resuming from the bytes already there.

Errors are sorted into `HubRefused` (the hub answered no: missing repo, revision, file, a gated
repo without access, a refused token — retrying cannot help) and `HubUnavailable` (timeouts,
connection errors, 5xx, 429: worth a retry)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None = None  # LFS files: the hub publishes their sha256
    git_sha1: str | None = None  # other files: their git blob id


@dataclass(frozen=True)
class Listing:
    commit: str
    files: list[RemoteFile]
    gated: bool = False


class HubRefused(Exception):
    """The hub said no; the message is the loader's last line."""


class HubUnavailable(Exception):
    """Slow or unreachable hub; retried with backoff."""


# (chunk, length): the chunk is None where the library wrote bytes this process did not see
OnWrite = Callable[[bytes | None, int], None]
OnTruncate = Callable[[int], None]


class Hub(Protocol):
    name: str
    model_id: str
    revision: str

    def listing(self) -> Listing: ...

    def fetch(self, remote: RemoteFile, commit: str, partial: Path, on_write: OnWrite,
              on_truncate: OnTruncate) -> None: ...


class _Sink:
    """The file object the hub library writes into: an append-mode file that reports every
    chunk (progress, streaming hash) and every rewind (a server that ignored the Range)."""

    def __init__(self, raw: IO[bytes], on_write: OnWrite, on_truncate: OnTruncate) -> None:
        self._raw, self._on_write, self._on_truncate = raw, on_write, on_truncate

    def write(self, data: bytes) -> int:
        written = self._raw.write(data)
        self._on_write(data, len(data))
        return written

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        kept = self._raw.truncate(size)
        self._on_truncate(kept)
        return kept

    def flush(self) -> None:
        self._raw.flush()

    @property
    def name(self) -> str:
        return str(self._raw.name)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection errors and timeouts of whichever HTTP client huggingface_hub uses (httpx2 from
    1.x on, requests before)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import httpx2

        found.append(httpx2.TransportError)
    except ImportError:
        pass
    try:
        import requests

        found += [requests.ConnectionError, requests.Timeout,
                  requests.exceptions.ChunkedEncodingError]
    except ImportError:
        pass
    return tuple(found)


class HuggingFace:
    """huggingface_hub (0.34 and later): `HfApi.model_info(files_metadata=True)` lists the
    files with sizes and LFS sha256; `get_hf_file_metadata` resolves each file at the listed
    commit; the library's `http_get` streams it with a Range from the partial file's length
    (`hf_hub_download` no longer resumes across processes from huggingface_hub 1.x on: its
    partial files are per process and removed on failure; so the partial file is the loader's
    and the ranged transfer the library's)."""

    name = "huggingface"

    def __init__(self, model_id: str, revision: str, token: str | None = None,
                 endpoint: str | None = None) -> None:
        from huggingface_hub import HfApi, constants
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
        self.model_id, self.revision, self.token = model_id, revision, token
        self.endpoint = endpoint or constants.ENDPOINT
        self.api = HfApi(endpoint=self.endpoint, token=token)

    def _token_in_use(self) -> str | None:
        from huggingface_hub import get_token

        return self.token or get_token()

    def _translate(self, error: Exception, what: str) -> Exception:
        from huggingface_hub import errors

        repo = f"{self.model_id!r} on {self.endpoint}"
        if isinstance(error, errors.GatedRepoError):
            return self._gated()
        if isinstance(error, errors.RevisionNotFoundError):
            return HubRefused(f"revision {self.revision!r} of {repo} does not exist")
        if isinstance(error, errors.RepositoryNotFoundError):
            return HubRefused(f"repository {repo} does not exist, or is private and the"
                              " token (if any) cannot read it")
        entry_missing = getattr(errors, "RemoteEntryNotFoundError", None) or \
            errors.EntryNotFoundError  # the name before huggingface_hub 1.x
        if isinstance(error, entry_missing):
            return HubRefused(f"{what} of {repo} at {self.revision!r} does not exist")
        if isinstance(error, errors.HfHubHTTPError) and error.response is not None:
            status = error.response.status_code
            if status == 401:
                return HubRefused(f"the hub refused the token (401) for {repo}: check the"
                                  " Secret that hubTokenSecretRef names")
            if status == 403:
                return HubRefused(f"the token may not read {repo} (403)")
            if status in (408, 429) or status >= 500:
                return HubUnavailable(f"the hub answered {status} for {what} of {repo}")
            return HubRefused(f"the hub answered {status} for {what} of {repo}")
        if isinstance(error, (*_transport_errors(), errors.OfflineModeIsEnabled,
                              errors.LocalEntryNotFoundError)):
            return HubUnavailable(f"cannot reach the hub at {self.endpoint} ({what}):"
                                  f" {type(error).__name__}: {error}".splitlines()[0])
        if isinstance(error, OSError) and "Consistency check failed" in str(error):
            return HubUnavailable(f"{what}: the transfer ended early")
        raise error

    def _gated(self) -> HubRefused:
        repo = f"{self.model_id!r} on {self.endpoint}"
        if self._token_in_use() is None:
            return HubRefused(f"{repo} is a gated repository and no token is set: accept its"
                              " terms on the hub and give the download a token"
                              " (hubTokenSecretRef)")
        return HubRefused(f"{repo} is a gated repository and the token has no access to it:"
                          " accept its terms on the hub with the token's account")

    def listing(self) -> Listing:
        try:
            info = self.api.model_info(self.model_id, revision=self.revision,
                                       files_metadata=True)
        except Exception as error:
            raise self._translate(error, "the file list") from None
        if not info.sha:
            raise HubRefused(f"the hub at {self.endpoint} gave no commit for revision"
                             f" {self.revision!r} of {self.model_id!r}")
        files = []
        for sibling in info.siblings or []:
            if sibling.lfs is not None:
                files.append(RemoteFile(sibling.rfilename, sibling.lfs.size,
                                        sha256=sibling.lfs.sha256))
            elif sibling.size is not None:
                files.append(RemoteFile(sibling.rfilename, sibling.size, git_sha1=sibling.blob_id))
            else:
                raise HubRefused(f"the hub at {self.endpoint} gave no size for"
                                 f" {sibling.rfilename!r}")
        gated = bool(info.gated)
        if gated and self._token_in_use() is None:
            raise self._gated()
        return Listing(commit=info.sha, files=files, gated=gated)

    def fetch(self, remote: RemoteFile, commit: str, partial: Path, on_write: OnWrite,
              on_truncate: OnTruncate) -> None:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(self.model_id, remote.path, revision=commit, endpoint=self.endpoint)
        try:
            # no retries inside: the loader's own bounded backoff is the one retry loop
            metadata = get_hf_file_metadata(url, token=self.token, endpoint=self.endpoint)
            headers = build_hf_headers(token=self.token)
            location = metadata.location or url
            if urlsplit(location).netloc != urlsplit(url).netloc:
                headers.pop("authorization", None)  # a signed CDN address: no token there
            resume = partial.stat().st_size if partial.exists() else 0
            with partial.open("ab") as raw:
                http_get(location, _Sink(raw, on_write, on_truncate), resume_size=resume,  # type: ignore[arg-type]
                         headers=headers, expected_size=remote.size,
                         displayed_filename=remote.path)
        except (HubRefused, HubUnavailable):
            raise
        except Exception as error:
            raise self._translate(error, repr(remote.path)) from None


class ModelScope:
    """modelscope: its hub client (`modelscope_hub.HubApi.list_repo_files`) lists the files with
    sizes and sha256; `modelscope.hub.file_download.http_get_model_file` downloads one with a
    Range from the partial file's length."""

    name = "modelscope"

    def __init__(self, model_id: str, revision: str, token: str | None = None,
                 endpoint: str | None = None) -> None:
        from modelscope.hub.utils.utils import get_endpoint
        from modelscope_hub import HubApi

        self.model_id, self.revision = model_id, revision
        self.token = token or os.environ.get("MODELSCOPE_API_TOKEN") or None
        self.api = HubApi(endpoint=endpoint, token=self.token)
        self.endpoint: str = (endpoint or str(get_endpoint())).rstrip("/")

    def _translate(self, error: Exception, what: str) -> Exception:
        from modelscope_hub import errors

        repo = f"{self.model_id!r} at revision {self.revision!r} on {self.endpoint}"
        if isinstance(error, errors.AuthenticationError):
            return HubRefused(f"the hub refused the token (401) for {repo}: check the Secret"
                              " that hubTokenSecretRef names")
        if isinstance(error, errors.PermissionDeniedError):
            return HubRefused(f"the token may not read {repo} (403): accept the model's terms"
                              " with the token's account")
        if isinstance(error, errors.NotExistError):
            return HubRefused(f"{what} of {repo} does not exist (or is private)")
        if getattr(error, "retryable", False) or isinstance(error, ConnectionError | TimeoutError):
            return HubUnavailable(f"cannot reach the hub at {self.endpoint} ({what}):"
                                  f" {type(error).__name__}: {error}".splitlines()[0])
        if isinstance(error, errors.HubError):
            return HubRefused(f"{what} of {repo}: {error}".splitlines()[0])
        raise error

    def listing(self) -> Listing:
        try:
            raw: list[Any] = self.api.list_repo_files(self.model_id, "model",
                                                      revision=self.revision, recursive=True)
        except Exception as error:
            raise self._translate(error, "the file list") from None
        files = [RemoteFile(item.path, int(item.size or 0), sha256=item.sha256 or None)
                 for item in raw if item.type != "tree"]
        # ModelScope names no commit in its listing; the revision is what is pinned.
        return Listing(commit=self.revision, files=files)

    def fetch(self, remote: RemoteFile, commit: str, partial: Path, on_write: OnWrite,
              on_truncate: OnTruncate) -> None:
        from modelscope.hub.callback import ProgressCallback
        from modelscope.hub.file_download import get_file_download_url, http_get_model_file

        seen = [partial.stat().st_size if partial.exists() else 0]
        on_write(None, 0)  # the bytes are not seen here: the digest is taken from the file

        def grown() -> None:
            now = partial.stat().st_size if partial.exists() else 0
            if now < seen[0]:
                on_truncate(now)
            elif now > seen[0]:
                on_write(None, now - seen[0])
            seen[0] = now

        class Report(ProgressCallback):  # type: ignore[misc]
            # the library calls update() with the partial length it resumes from, and with
            # each chunk before writing it: the file on disk is the truth, so report its growth
            def update(self, size: int) -> None:
                grown()

        url = get_file_download_url(self.model_id, remote.path, commit, endpoint=self.endpoint)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            http_get_model_file(url, str(partial.parent), partial.name, remote.size, cookies=None,
                                headers=headers, disable_tqdm=True,
                                progress_callbacks=[Report])
        except Exception as error:
            raise self._translate(error, repr(remote.path)) from None
        grown()
