"""``model.pretrained: download``: fetches official weights into the usual cache, safely.

``torch.hub.download_url_to_file`` is close, but it accepts a transfer that stops early (Python's
``http.client`` returns a short body without raising), so a dropped connection would leave a
truncated file in the cache that every later run trusts. :func:`download_file` streams into a
temporary file beside the target, checks the byte count against ``Content-Length`` and the
SHA-256 against the expected prefix or digest, and only then renames it into place; on any failure
the temporary file is removed and the cache is left as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from typing import Optional

__all__ = ["DownloadError", "download_file", "hash_prefix_from_name"]

_CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A download that did not produce a complete, verified file (the cache is unchanged)."""


def hash_prefix_from_name(path_or_url: str) -> Optional[str]:
    """The SHA-256 prefix in a ``torch.hub``-style file name (``resnet18-f37072fd.pth``)."""
    match = re.search(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$", os.path.basename(path_or_url))
    return match.group(1) if match else None


def download_file(
    url: str,
    target: str,
    sha256: Optional[str] = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> str:
    """Downloads ``url`` to ``target`` atomically, verifying length and checksum.

    Args:
        url: http(s) or file URL.
        target: Final path; its directory is created. An existing file is replaced only by a
            complete, verified download.
        sha256: Expected SHA-256 hex digest or prefix (e.g. the 8 characters in a torch.hub file
            name); None skips the checksum (the length is still checked when the server sends it).
        progress: Show a tqdm progress bar.
        timeout: Socket timeout in seconds.

    Returns:
        ``target``.

    Raises:
        DownloadError: Network failure, truncated transfer or checksum mismatch; the message names
            the URL and the target, and no partial file is left behind.
    """
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".partial", dir=directory)
    digest = hashlib.sha256()
    received = 0
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "segproto"}),
                                                  timeout=timeout)
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", err)
                raise DownloadError(f"download of {url} failed ({reason}); target {target} not written") from err
            with response:
                length = response.headers.get("Content-Length")
                expected_len = int(length) if length and length.isdigit() else None
                bar = None
                if progress:
                    from tqdm import tqdm

                    bar = tqdm(total=expected_len, unit="B", unit_scale=True, unit_divisor=1024,
                               desc=os.path.basename(target))
                try:
                    while True:
                        try:
                            chunk = response.read(_CHUNK)
                        except (OSError, ValueError) as err:  # reset connection, IncompleteRead
                            raise DownloadError(f"download of {url} broke off after {received} bytes "
                                                f"({err}); target {target} not written") from err
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                finally:
                    if bar is not None:
                        bar.close()
        if expected_len is not None and received != expected_len:
            raise DownloadError(f"download of {url} is truncated: {received} of {expected_len} bytes; "
                                f"target {target} not written")
        actual = digest.hexdigest()
        if sha256 and not actual.startswith(sha256.lower()):
            raise DownloadError(f"download of {url} has SHA-256 {actual}, expected {sha256}...; "
                                f"target {target} not written")
        os.replace(tmp, target)
        return target
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
