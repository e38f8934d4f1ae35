"""Verification in a child process at low CPU priority.

Walking the whole log is seconds of pure-Python CPU per million records. Run in a thread of
the server it holds the GIL against the event loop (four verifies at once slowed /decide to
0.5 s); in a child process, niced, it shares nothing with the server but the database.

    python -m decision_service.audit.verify_process < {"database_url": …, "key_file": …,
                                                       "checkpoint_file": … | null}
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import msgspec

from decision_service.audit.chain import VerifyReport


class _Job(msgspec.Struct):
    database_url: str
    key_file: str
    checkpoint_file: str | None = None
    incremental: bool = False


class VerifyFailed(Exception):
    """The child process could not verify (database unreachable, key file unreadable…)."""


async def verify_in_child(
    database_url: str, key_file: Path, checkpoint_file: Path | None, *, incremental: bool = False
) -> VerifyReport:
    job = _Job(
        database_url,
        str(key_file.absolute()),
        None if checkpoint_file is None else str(checkpoint_file.absolute()),
        incremental,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "decision_service.audit.verify_process",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # the URL may hold a password: it goes through stdin, never the command line
        out, err = await proc.communicate(msgspec.json.encode(job))
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise VerifyFailed(lines[-1] if lines else f"exit status {proc.returncode}")
    return msgspec.json.decode(out, type=VerifyReport)


def main() -> int:
    with contextlib.suppress(OSError):
        os.nice(10)  # /decide first
    from decision_service.audit.checkpoints import CheckpointFile
    from decision_service.audit.engine import make_engine
    from decision_service.audit.keys import Keyring
    from decision_service.audit.verify import verify

    job = msgspec.json.decode(sys.stdin.buffer.read(), type=_Job)
    engine = make_engine(job.database_url)
    try:
        report = verify(
            engine,
            Keyring.load(Path(job.key_file)),
            None if job.checkpoint_file is None else CheckpointFile(Path(job.checkpoint_file)),
            incremental=job.incremental,
            mark_verified=True,
        )
    finally:
        engine.dispose()
    sys.stdout.buffer.write(msgspec.json.encode(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
