"""Download Meta's official SAM 2 / SAM 2.1 checkpoints, verified, for machines with internet.

    python -m engine.download --model sam2.1_hiera_tiny --dest checkpoints/ --sha256 <hex>
    python -m engine.download --model sam2.1_hiera_tiny --dest checkpoints/ --checksums SHA256SUMS

Files come from Meta's own release URLs (``OFFICIAL_URLS``, as in facebookresearch/sam2's
``checkpoints/download_ckpts.sh``). Integrity is checked three ways: the byte count the server
announced, the SHA-256 of the bytes, and (unless ``--no-load-check``) a strict load of the file
into the named architecture. The bytes go to ``<name>.part`` next to the destination and are
renamed into place only when every check passed; on any failure (HTTP error, interrupted
transfer, wrong checksum, Ctrl-C) nothing partial is left behind.

About the SHA-256 values: Meta publishes none, and this project has not been able to fetch the
files to compute them (no internet on its build machines), so ``KNOWN_SHA256`` is empty rather
than filled with unverified numbers. Give the checksum yourself (``--sha256`` or a
``sha256sum``-style ``--checksums`` file from a machine you trust), or pass
``--allow-unverified`` to accept the file on the other two checks alone; the command then prints
the SHA-256 it computed so you can pin it for the next machine.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from .config import MODELS

_SAM2_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"
_SAM21_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
OFFICIAL_URLS: dict[str, str] = {
    name: f"{_SAM21_BASE if cfg.version == '2.1' else _SAM2_BASE}/{cfg.checkpoint_name}"
    for name, cfg in MODELS.items()
}
# SHA-256 of Meta's files, by checkpoint file name. Empty on purpose: see the module docstring.
# Add an entry only after computing it from a download you trust.
KNOWN_SHA256: dict[str, str] = {}

CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class DownloadError(RuntimeError):
    """A download that did not produce a verified file (nothing was left at the destination)."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checksums(path: Path) -> dict[str, str]:
    """A ``sha256sum``-style file (``<hex>  <file name>`` per line) -> {file name: hex}."""
    table = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not _HEX64.match(parts[0]):
            raise DownloadError(f"{path}: not a sha256sum line: {line!r}")
        table[Path(parts[1].lstrip("*")).name] = parts[0].lower()
    return table


class Progress:
    """One status line on a terminal (a line every 10% otherwise): done/total, rate, ETA."""

    def __init__(self, label: str, stream=sys.stderr, interval: float = 0.5) -> None:
        self.label, self.stream, self.interval = label, stream, interval
        self.start = self.last = time.monotonic()
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_decile = -1

    def __call__(self, done: int, total: int | None, final: bool = False) -> None:
        now = time.monotonic()
        pct = done / total if total else None
        decile = int(pct * 10) if pct is not None else -1
        if self.tty and not final and now - self.last < self.interval:
            return
        if not self.tty and not final and (pct is None or decile == self.last_decile):
            return
        self.last, self.last_decile = now, decile
        rate = done / max(now - self.start, 1e-6)
        text = f"{self.label}: {done / 1e6:.1f} MB"
        if total:
            eta = (total - done) / rate if rate > 0 else float("inf")
            text += f" / {total / 1e6:.1f} MB ({100 * pct:.0f}%), ETA {eta:.0f}s"
        text += f", {rate / 1e6:.1f} MB/s"
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r" if self.tty else "") + text + end)
        self.stream.flush()


def download(url: str, dest: str | Path, sha256: str | None,
             progress: Callable[[int, int | None, bool], None] | None = None,
             timeout: float = 60.0) -> str:
    """Fetch ``url`` to ``dest``; check the announced length and (if given) the SHA-256.

    Returns the SHA-256 of the file. Raises ``DownloadError`` and leaves nothing at ``dest``
    (nor a ``.part`` file) when anything goes wrong."""
    dest = Path(dest)
    if sha256 is not None and not _HEX64.match(sha256):
        raise DownloadError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    done = 0
    try:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except urllib.error.HTTPError as err:
            raise DownloadError(f"{url}: the server answered {err.code} {err.reason}") from err
        except (urllib.error.URLError, OSError) as err:
            raise DownloadError(f"{url}: cannot connect ({getattr(err, 'reason', err)})") from err
        with response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, ValueError, http.client.HTTPException) as err:
                    raise DownloadError(f"{url}: transfer interrupted after {done} bytes "
                                        f"({err})") from err
                if not chunk:
                    break
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total, False)
        if progress:
            progress(done, total, True)
        if total is not None and done != total:
            raise DownloadError(f"{url}: transfer interrupted: got {done} of {total} bytes")
        digest = h.hexdigest()
        if sha256 is not None and digest != sha256.lower():
            raise DownloadError(f"{url}: SHA-256 mismatch: expected {sha256.lower()}, got "
                                f"{digest} ({done} bytes); the file was deleted")
        os.replace(part, dest)
        return digest
    except BaseException as err:
        part.unlink(missing_ok=True)
        if isinstance(err, DownloadError) or not isinstance(err, Exception):
            raise
        raise DownloadError(f"{url}: download failed after {done} bytes ({err})") from err


def expected_sha256(file_name: str, sha256: str | None, checksums: Path | None) -> str | None:
    """The checksum to verify ``file_name`` against: --sha256, else --checksums, else the
    built-in table; None when none is known."""
    if sha256:
        return sha256.lower()
    if checksums is not None:
        table = read_checksums(checksums)
        if file_name not in table:
            raise DownloadError(f"{checksums} has no entry for {file_name}")
        return table[file_name]
    return KNOWN_SHA256.get(file_name)


def check_loads(path: Path, model: str) -> None:
    """Strictly load ``path`` into architecture ``model`` (raises CheckpointError)."""
    from .checkpoint import load_model

    load_model(path, model, image_size=256)


def fetch_model(model: str, dest_dir: str | Path, sha256: str | None = None,
                checksums: Path | None = None, allow_unverified: bool = False,
                base_url: str | None = None, load_check: bool = True, force: bool = False,
                log=print) -> Path:
    """Download Meta's checkpoint of ``model`` into ``dest_dir``, verified. Returns its path."""
    if model not in OFFICIAL_URLS:
        raise DownloadError(f"unknown model {model!r}; Meta publishes: "
                            f"{', '.join(sorted(OFFICIAL_URLS))}")
    file_name = MODELS[model].checkpoint_name
    url = OFFICIAL_URLS[model] if base_url is None else f"{base_url.rstrip('/')}/{file_name}"
    expected = expected_sha256(file_name, sha256, checksums)
    if expected is None and not allow_unverified:
        raise DownloadError(
            f"no SHA-256 known for {file_name}: pass --sha256 or --checksums (from a machine "
            "you trust), or --allow-unverified to rely on the length and load checks alone")
    dest = Path(dest_dir) / file_name
    if dest.is_file() and not force:
        if expected is not None and sha256_of(dest) == expected:
            log(f"{dest} is already there and matches its SHA-256")
            return dest
        if expected is not None:
            raise DownloadError(f"{dest} exists but does not match SHA-256 {expected}; "
                                "delete it or pass --force to download again")
        log(f"{dest} is already there (not verified: no checksum); --force to download again")
        return dest
    log(f"downloading {url} -> {dest}")
    digest = download(url, dest, expected, progress=Progress(file_name))
    if load_check:
        try:
            check_loads(dest, model)
        except Exception as err:
            dest.unlink(missing_ok=True)
            raise DownloadError(f"{dest} does not load as {model} and was deleted: {err}") from err
    verdict = "verified" if expected else "NOT verified against a known checksum"
    log(f"{dest}: SHA-256 {digest} ({verdict})")
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.download",
                                description="Download Meta's SAM 2 checkpoints, verified.")
    p.add_argument("--model", required=True, choices=sorted(OFFICIAL_URLS))
    p.add_argument("--dest", default="checkpoints", type=Path, help="directory (created)")
    p.add_argument("--sha256", help="expected SHA-256 of the file (64 hex digits)")
    p.add_argument("--checksums", type=Path, help="sha256sum-style file naming the checkpoint")
    p.add_argument("--allow-unverified", action="store_true",
                   help="accept a file no checksum is known for (length and load checks only)")
    p.add_argument("--base-url", help="fetch <base-url>/<file name> instead (a mirror)")
    p.add_argument("--no-load-check", action="store_true",
                   help="skip loading the file into the model after the download")
    p.add_argument("--force", action="store_true", help="download even if the file exists")
    args = p.parse_args(argv)
    try:
        fetch_model(args.model, args.dest, args.sha256, args.checksums, args.allow_unverified,
                    args.base_url, not args.no_load_check, args.force)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was left behind", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
