"""The checkpoint download command against a local HTTP server on 127.0.0.1.

Success, checksum mismatch, 404 and a transfer cut short: every failure names the problem and
leaves nothing behind (no file at the destination, no ``.part``).
"""
import hashlib
import http.server
import io
import threading
from pathlib import Path

import pytest

from engine.download import (OFFICIAL_URLS, DownloadError, Progress, download, fetch_model,
                             main, read_checksums)

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, more than one read chunk
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
FILE = "sam2.1_hiera_tiny.pt"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == f"/{FILE}":
            self._send(PAYLOAD, len(PAYLOAD))
        elif self.path == f"/cut/{FILE}":  # announces the full length, sends a third
            self._send(PAYLOAD[:len(PAYLOAD) // 3], len(PAYLOAD))
        else:
            self.send_error(404, "Not Found")

    def _send(self, body: bytes, length: int):
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_success_verifies_and_leaves_only_the_file(server, tmp_path):
    dest = tmp_path / "ckpt" / FILE
    assert download(f"{server}/{FILE}", dest, DIGEST) == DIGEST
    assert dest.read_bytes() == PAYLOAD
    assert _left(dest.parent) == [FILE]


def test_checksum_mismatch_deletes_everything(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(DownloadError, match=f"SHA-256 mismatch: expected {wrong}, got {DIGEST}"):
        download(f"{server}/{FILE}", tmp_path / FILE, wrong)
    assert _left(tmp_path) == []


def test_404_names_the_status_and_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="answered 404"):
        download(f"{server}/missing.pt", tmp_path / FILE, DIGEST)
    assert _left(tmp_path) == []


def test_interrupted_transfer_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="interrupted"):
        download(f"{server}/cut/{FILE}", tmp_path / FILE, None)
    assert _left(tmp_path) == []


def test_unreachable_server(tmp_path):
    with pytest.raises(DownloadError, match="cannot connect"):
        download("http://127.0.0.1:9/x.pt", tmp_path / FILE, None, timeout=2)
    assert _left(tmp_path) == []


def test_cli_with_checksum_file_and_mirror(server, tmp_path, capsys):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"# trusted\n{DIGEST}  {FILE}\n")
    dest = tmp_path / "checkpoints"
    args = ["--model", "sam2.1_hiera_tiny", "--dest", str(dest), "--checksums", str(sums),
            "--base-url", server, "--no-load-check"]
    assert main(args) == 0
    assert (dest / FILE).read_bytes() == PAYLOAD
    assert "verified" in capsys.readouterr().out
    assert main(args) == 0  # second run: already there, checked, not fetched again
    assert "already there and matches" in capsys.readouterr().out


def test_cli_refuses_without_a_checksum(server, tmp_path, capsys):
    args = ["--model", "sam2.1_hiera_tiny", "--dest", str(tmp_path), "--base-url", server,
            "--no-load-check"]
    assert main(args) == 1
    assert "no SHA-256 known" in capsys.readouterr().err
    assert _left(tmp_path) == []
    assert main(args + ["--allow-unverified"]) == 0  # prints the digest to pin
    assert DIGEST in capsys.readouterr().out


def test_load_check_deletes_a_file_that_is_not_the_model(server, tmp_path):
    with pytest.raises(DownloadError, match="does not load as sam2.1_hiera_tiny"):
        fetch_model("sam2.1_hiera_tiny", tmp_path, sha256=DIGEST, base_url=server,
                    log=lambda s: None)
    assert _left(tmp_path) == []


def test_official_urls_and_checksum_file_format(tmp_path):
    assert OFFICIAL_URLS["sam2.1_hiera_tiny"] == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt")
    assert OFFICIAL_URLS["sam2_hiera_large"] == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt")
    assert len(OFFICIAL_URLS) == 8
    bad = tmp_path / "sums"
    bad.write_text("not-a-hash  file.pt\n")
    with pytest.raises(DownloadError, match="not a sha256sum line"):
        read_checksums(bad)
    good = tmp_path / "sums2"
    good.write_text(f"{DIGEST.upper()} *dir/{FILE}\n")
    assert read_checksums(good) == {FILE: DIGEST}


def test_progress_reports_percent_and_rate():
    out = io.StringIO()
    progress = Progress("x.pt", stream=out)
    for done in range(0, 101, 5):
        progress(done * 10_000, 1_000_000)
    progress(1_000_000, 1_000_000, final=True)
    text = out.getvalue()
    assert "x.pt: 1.0 MB / 1.0 MB (100%)" in text and "MB/s" in text
    assert text.count("\n") <= 12  # one line per 10% when not on a terminal
