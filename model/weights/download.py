"""Weights files on disk: a registry file downloaded once into torch.hub's cache (hash-checked,
atomically, with progress and cancel), or a local file named by its path."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.weights.registry import COMBINED, DEFAULT_WEIGHTS, REGISTRY, WeightsInfo, lookup


class WeightsUnavailableError(RuntimeError):
    """The weights file is neither cached nor downloadable (offline, or the URL failed)."""


class WeightsHashError(RuntimeError):
    """A file's SHA-256 does not match the registry's."""


class DownloadCancelled(Exception):
    """Raised by a download's ``on_progress`` callback to stop it; nothing is left in the cache."""


# on_progress(bytes downloaded, total bytes or None): see ``download``
ProgressCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class WeightsFile:
    """A weights file on disk, with where it came from."""

    path: Path
    sha256: str
    info: WeightsInfo | None = None

    @property
    def version(self) -> str:
        """Short model version for provenance: weights name (or file stem) + 8 hash digits."""
        name = self.info.name if self.info is not None else self.path.stem
        return f"{name}@{self.sha256[:8]}"


def cache_dir() -> Path:
    """torch.hub's checkpoint directory (``$TORCH_HOME/hub/checkpoints``), shared with torchvision."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    weights: str | Path | WeightsInfo,
    *,
    progress: bool = True,
    directory: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> WeightsFile:
    """Resolve weights to a verified file on disk, downloading registry weights once.

    ``weights`` is a registry name, a ``WeightsInfo``, or a path to a ``.pth`` /
    ``.safetensors`` file. A registry file is looked for in ``directory`` (default: torch.hub's
    cache), downloaded there if absent, and its hash checked either way. ``progress`` shows a bar
    on stderr; ``on_progress`` is called as the bytes arrive (see ``download``); neither is used
    when the file is already there.
    """
    if isinstance(weights, str) and weights in COMBINED:
        files = " and ".join(info.name for info in COMBINED[weights].files)
        raise ValueError(f"{weights} is two networks run as one by the Predictor ({files}), not one weights file")
    if isinstance(weights, str) and (weights in REGISTRY or weights in DEFAULT_WEIGHTS):
        weights = lookup(weights)
    if not isinstance(weights, WeightsInfo):
        path = Path(weights).expanduser()
        if not path.is_file():
            known = ", ".join(sorted([*REGISTRY, *COMBINED]))
            raise FileNotFoundError(f"no weights file at {path} (registry names: {known})")
        return WeightsFile(path=path, sha256=sha256_of(path))

    info = weights
    path = (directory or cache_dir()) / info.filename
    if not path.is_file():
        download(info.url, path, info.sha256_prefix, progress=progress, on_progress=on_progress)
    digest = sha256_of(path)
    if not digest.startswith(info.sha256_prefix):
        raise WeightsHashError(
            f"{path} has SHA-256 {digest}, expected one starting with {info.sha256_prefix} "
            f"(the file of {info.url}); delete it and try again"
        )
    return WeightsFile(path=path, sha256=digest, info=info)


def download(
    url: str,
    destination: Path,
    sha256_prefix: str | None = None,
    *,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
) -> None:
    """Download ``url`` to ``destination`` atomically: into a temporary file beside it, hash
    checked, then renamed. A failed, corrupt or cancelled download leaves nothing at
    ``destination`` and no temporary file.

    ``progress`` shows a bar on stderr. ``on_progress(done, total)`` gets the bytes written so far
    and the size the server announced (None if it did not), once before the first chunk and after
    each; raising ``DownloadCancelled`` in it stops the download between two chunks.
    """
    from tqdm.auto import tqdm

    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, partial_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial")
    partial = Path(partial_name)
    try:
        digest = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": "maskrcnn-annotator"})
        try:
            response = urllib.request.urlopen(request, timeout=30)
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise WeightsUnavailableError(
                f"could not download {url} ({reason}).\n"
                f"Without network access, fetch that file on another machine and place it at:\n"
                f"    {destination}"
            ) from error
        with response, os.fdopen(fd, "wb") as out:
            fd = -1
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            report = on_progress or (lambda done, total: None)
            done = 0
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=destination.name, disable=not progress
            ) as bar:
                report(done, total)
                # 256 KiB: a cancel waits for one chunk, a quarter of a second at 1 MB/s
                while chunk := _read_chunk(response, url, destination, done, 1 << 18):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
                    report(done, total)
            if total is not None and done < total:  # the server closed the connection early
                raise _broke_off(url, destination, done, "connection closed")
            out.flush()
            os.fsync(out.fileno())
        hexdigest = digest.hexdigest()
        if sha256_prefix and not hexdigest.startswith(sha256_prefix):
            raise WeightsHashError(
                f"download of {url} has SHA-256 {hexdigest}, expected one starting with {sha256_prefix}"
            )
        os.replace(partial, destination)
    finally:
        if fd != -1:
            os.close(fd)
        partial.unlink(missing_ok=True)


def _read_chunk(response: Any, url: str, destination: Path, done: int, size: int) -> bytes:
    """The next chunk of a download; a connection that breaks off is the offline error too."""
    try:
        return response.read(size)
    except (OSError, http.client.HTTPException) as error:
        raise _broke_off(url, destination, done, repr(error)) from error


def _broke_off(url: str, destination: Path, done: int, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"the download of {url} broke off after {done / 2**20:.1f} MB ({reason}).\n"
        f"Try again, or fetch that file on another machine and place it at:\n    {destination}"
    )
