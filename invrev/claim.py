"""Claiming a run before it trains, so that no two batches or workers train one run at once.

A claim is a lease file, ``<run folder>/.claim``, created atomically (``O_CREAT | O_EXCL``) by
``filelock.SoftFileLease``. It records the holder's pid, host and process start time, and a thread
of the holder touches it every ``LEASE_SECONDS / 3``. A claim is taken over when its holder is
dead: at once on the same host (the pid is gone, or now belongs to a later process), and on
another host, which cannot see that pid, once the file has been seen unchanged for
``LEASE_SECONDS``. Every contender must use the same lease (filelock refuses a mismatch), so it is
one constant. Five minutes leave room for NFS attribute caching (up to 60 s) between a heartbeat and
another host seeing it; a run of SD 1.5 takes some 40 minutes, so a dead host's run waits little.
"""

from __future__ import annotations

from pathlib import Path

import filelock

CLAIM = ".claim"
LEASE_SECONDS = 300.0


def take(folder: str | Path, wait: float = 0.0, lease: float = LEASE_SECONDS) -> filelock.SoftFileLease | None:
    """Claim the run in ``folder`` (made if missing), waiting up to ``wait`` seconds for its holder;
    None when another live holder keeps it. Release the returned lease when done with the run.

    The lease object is kept, one per path and process: a holder on another host is judged dead
    only by one observer seeing the claim unchanged for ``lease`` seconds, across the short waits of
    several attempts (a dropped object would forget what it had seen).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    claim = _lease(folder, lease)
    try:
        claim.acquire(timeout=wait)
    except filelock.Timeout:
        return None
    return claim


def owner(folder: str | Path, lease: float = LEASE_SECONDS):
    """The record of the claim on the run in ``folder`` (``pid``, ``hostname``, ...), or None when unclaimed."""
    return _lease(Path(folder), lease).owner


def holder(folder: str | Path, lease: float = LEASE_SECONDS) -> str:
    """Who holds the run in ``folder``, for a progress line: ``pid 4242 on node7``."""
    record = owner(folder, lease)
    return f"pid {record.pid} on {record.hostname}" if record else "a holder that has just let go"


_LEASES: dict[tuple[Path, float], filelock.SoftFileLease] = {}


def _lease(folder: Path, lease: float) -> filelock.SoftFileLease:
    key = (folder.resolve() / CLAIM, lease)
    if key not in _LEASES:
        _LEASES[key] = filelock.SoftFileLease(key[0], lease_duration=lease, poll_interval=0.25)
    return _LEASES[key]


def lost(claim: filelock.SoftFileLease) -> str | None:
    """Why ``claim`` stopped being ours while we held it (a missed heartbeat let another take it
    over), or None: work done under a lost claim must not be published as the run's."""
    compromise = claim.compromise
    return f"{compromise.reason} ({compromise.lock_file})" if compromise else None
