"""`python -m modeldeploy.loader`: the download Job's command.

Exit status: 0 complete; 2 invalid arguments; 3 the hub refused (missing repository, revision or
file, gated repository, refused token); 4 not enough space; 5 verification failed; 6 the hub
stayed unreachable after the retries; 1 anything else. The last line (stderr, and the
container's termination message) says why.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from .contract import (
    DOWNLOAD_EXCLUDES,
    HUBS,
    InvalidArgument,
    coordinates,
    validate_model_id,
    validate_revision,
)
from .download import EXIT_INVALID, Failure, Options, download
from .hubs import Hub, HuggingFace, ModelScope
from .kube import SERVICE_ACCOUNT_DIR, JobTarget, PatchRefused, patch_job_annotation
from .progress import Progress, encode_progress, progress_message

TERMINATION_LOG = Path("/dev/termination-log")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modeldeploy.loader", allow_abbrev=False,
        description="Download a model revision into a cache volume: resumable, verified, with"
                    " progress; the completion marker is written last.")
    parser.add_argument("--hub", required=True, choices=HUBS)
    parser.add_argument("--model-id", required=True, help="ORG/NAME on the hub")
    parser.add_argument("--revision", required=True, help="branch, tag or commit")
    parser.add_argument("--target", required=True, type=Path,
                        help="the cache volume's mount (weights go to TARGET/weights)")
    parser.add_argument("--exclude", action="append", default=None, metavar="PATTERN",
                        help=f"file pattern to skip (repeatable; default: "
                             f"{' '.join(DOWNLOAD_EXCLUDES)})")
    parser.add_argument("--job-name", default=None,
                        help="the download Job: progress goes to its annotation, with the pod's"
                             " service-account token")
    parser.add_argument("--service-account-dir", type=Path, default=SERVICE_ACCOUNT_DIR,
                        help="where the pod's token, namespace and ca.crt are mounted")
    parser.add_argument("--endpoint", default=None,
                        help="hub address (default: HF_ENDPOINT / MODELSCOPE_DOMAIN or the"
                             " public hub)")
    parser.add_argument("--progress-interval", type=float, default=20.0, metavar="SECONDS")
    parser.add_argument("--progress-file", type=Path, default=None,
                        help="also append every progress record (JSON) to this file")
    parser.add_argument("--workers", type=int, default=8, help="files fetched at once")
    parser.add_argument("--retries", type=int, default=5,
                        help="retries of a hub request that timed out or failed to connect")
    parser.add_argument("--backoff", type=float, default=2.0, metavar="SECONDS",
                        help="first pause between retries (doubling, at most 60 s)")
    return parser


class Publisher:
    """Progress to stdout, to the Job's annotation (when a token is there) and to a file."""

    def __init__(self, job: JobTarget | None, progress_file: Path | None) -> None:
        self.job, self.progress_file = job, progress_file
        self._warned = False

    def __call__(self, progress: Progress) -> None:
        line = progress_message(progress)
        if progress.files_total and progress.state in ("downloading", "verifying"):
            line += f" [{progress.files_done} of {progress.files_total} files]"
        print(line, flush=True)
        value = encode_progress(progress)
        if self.progress_file is not None:
            with self.progress_file.open("a") as f:
                f.write(value + "\n")
        if self.job is not None:
            try:
                patch_job_annotation(self.job, value)
            except (PatchRefused, OSError) as error:
                if not self._warned:
                    print(f"warning: progress not published on Job {self.job.job_name}: {error}",
                          file=sys.stderr, flush=True)
                    self._warned = True
                if isinstance(error, PatchRefused) and error.status in (401, 403, 404):
                    self.job = None


def _hub(hub: str, model_id: str, revision: str, endpoint: str | None) -> Hub:
    if hub == "huggingface":
        return HuggingFace(model_id, revision, endpoint=endpoint)
    return ModelScope(model_id, revision, endpoint=endpoint)


def _last_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
    try:
        if TERMINATION_LOG.exists():
            TERMINATION_LOG.write_text(line[:4000])
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        model_id, revision = validate_model_id(args.model_id), validate_revision(args.revision)
        for pattern in args.exclude or ():
            if pattern.startswith("-"):
                raise InvalidArgument(f"exclude pattern {pattern!r} starts with '-'")
        if args.retries < 0 or args.backoff < 0 or args.progress_interval <= 0 \
                or not 1 <= args.workers <= 64:
            raise InvalidArgument("--retries and --backoff must be >= 0, --progress-interval"
                                  " > 0, --workers 1 to 64")
    except InvalidArgument as error:
        _last_line(f"error: {error}")
        return EXIT_INVALID
    job = (JobTarget.in_cluster(args.job_name, args.service_account_dir) if args.job_name
           else None)
    if args.job_name and job is None:
        print(f"note: no service-account token in {args.service_account_dir} or not in a"
              " cluster: progress is printed here only", flush=True)
    publish = Publisher(job, args.progress_file)
    options = Options(target=args.target, coordinates=coordinates(args.hub, model_id, revision),
                      excludes=tuple(args.exclude) if args.exclude is not None
                      else DOWNLOAD_EXCLUDES,
                      retries=args.retries, backoff_seconds=args.backoff, workers=args.workers,
                      interval_seconds=args.progress_interval)
    endpoint = args.endpoint or (os.environ.get("HF_ENDPOINT") if args.hub == "huggingface"
                                 else None)
    try:
        final = download(_hub(args.hub, model_id, revision, endpoint), options, publish)
    except Failure as failure:
        _publish_failure(publish, failure.line, failure.progress)
        _last_line(f"error: {failure.line}")
        return failure.code
    except Exception as error:  # the last line must say what happened, whatever it was
        line = f"unexpected error: {type(error).__name__}: {error}".splitlines()[0]
        _publish_failure(publish, line)
        _last_line(f"error: {line}")
        return 1
    _last_line(f"download complete: {options.coordinates} ({final.files_total} files)"
               if final.files_total else f"already complete: {options.coordinates}")
    return 0


def _publish_failure(publish: Publisher, line: str, progress: Progress | None = None) -> None:
    from .download import now_iso

    with contextlib.suppress(OSError):
        publish(progress or Progress("failed", 0, 0, 0, 0, now_iso(), message=line))
