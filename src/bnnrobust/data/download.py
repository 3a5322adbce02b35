"""Fetching dataset files: md5 checks, atomic writes, and a cache of files already verified."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from bnnrobust.data.registry import FileSpec
from bnnrobust.files import atomic_path, atomic_write

_VERIFIED_FILE = "verified-files.json"


def md5sum(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """The md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class VerifiedFiles:
    """Remembers which files passed their md5 check, keyed by path, size and mtime.

    A file that is replaced or touched is checked again; the record lives in the cache folder.
    """

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / _VERIFIED_FILE
        try:
            self._seen: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._seen = {}

    @staticmethod
    def _stamp(path: Path) -> list:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]

    def is_verified(self, path: Path, md5: str) -> bool:
        """Whether ``path`` matched ``md5`` before and has not changed since."""
        entry = self._seen.get(str(path.resolve()))
        return entry is not None and entry[:2] == self._stamp(path) and entry[2] == md5

    def check(self, path: Path, md5: str) -> bool:
        """Verify ``path`` against ``md5`` (from the record when possible); remember a match."""
        if self.is_verified(path, md5):
            return True
        if md5sum(path) != md5:
            return False
        self._seen[str(path.resolve())] = [*self._stamp(path), md5]
        try:
            atomic_write(self.path, json.dumps(self._seen, indent=0))
        except OSError:
            pass  # a read-only cache only costs a re-check next time
        return True


def download(url: str, dest: Path, spec: FileSpec, *, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` atomically; the file lands only if its md5 is ``spec.md5``.

    Raises ``OSError`` (including ``urllib.error.URLError``) on a failed transfer and
    ``ValueError`` on an md5 mismatch; ``dest`` is untouched in both cases.
    """
    digest = hashlib.md5()
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or spec.size
            columns = (
                TextColumn(f"downloading {spec.name}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
            )
            with Progress(*columns, transient=True, disable=not total or total < 1 << 20) as bar:
                task = bar.add_task("dl", total=total)
                while block := resp.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.advance(task, len(block))
        if digest.hexdigest() != spec.md5:
            raise ValueError(f"md5 {digest.hexdigest()} != expected {spec.md5}")


def fetch(spec: FileSpec, dest: Path, mirrors: tuple[str, ...]) -> list[str]:
    """Try each mirror in turn; return the failure reasons (empty when the file arrived)."""
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + spec.name
        try:
            download(url, dest, spec)
            return []
        except (OSError, ValueError, urllib.error.URLError) as exc:
            failures.append(f"{url}: {exc}")
    return failures
