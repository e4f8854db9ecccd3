"""Object stores on this machine for the tests of s3:// and gs:// inputs: moto's S3 server
and gcp-storage-emulator's GCS server, each on a port chosen when this module is imported.

``ENVIRONMENT`` points pyarrow (and boto3) at them; the Ray fixture puts it in the
environment before Ray starts, since Ray's workers inherit the environment of the process
that starts it. The servers start when a test first calls :func:`start`, and run until the
tests end. No request leaves the machine: the credentials are fake and the instance
metadata service is off (``AWS_EC2_METADATA_DISABLED``; the GCS emulator is read
anonymously).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


S3_PORT = _free_port()
GCS_PORT = _free_port()
ENVIRONMENT = {
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",  # read by pyarrow and boto3
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{GCS_PORT}",  # read by mkt_tag.remote
}


class Stores:
    """Both servers, and how to put objects in them."""

    def __init__(self) -> None:
        import boto3

        self.s3 = boto3.client("s3")
        self.buckets: set[tuple[str, str]] = set()

    def put(self, uri: str, data: bytes) -> str:
        """Store ``data`` at ``uri`` (s3:// or gs://), making its bucket if new."""
        scheme, _, rest = uri.partition("://")
        bucket, _, key = rest.partition("/")
        if (scheme, bucket) not in self.buckets:
            self._make_bucket(scheme, bucket)
            self.buckets.add((scheme, bucket))
        if scheme == "s3":
            self.s3.put_object(Bucket=bucket, Key=key, Body=data)
        else:
            name = urllib.parse.quote(key, safe="")
            _gcs("POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}", data)
        return uri

    def upload(self, folder: Path, prefix: str) -> dict[str, Path]:
        """Every file under ``folder`` at ``prefix`` + its relative path: URI -> file. Not
        empty files to GCS: gcp-storage-emulator cannot store an empty object."""
        files = sorted(path for path in folder.rglob("*") if path.is_file())
        if prefix.startswith("gs://"):
            files = [path for path in files if path.stat().st_size]
        return {
            self.put(f"{prefix}{p.relative_to(folder).as_posix()}", p.read_bytes()): p
            for p in files
        }

    def _make_bucket(self, scheme: str, bucket: str) -> None:
        if scheme == "s3":
            self.s3.create_bucket(Bucket=bucket)
        else:
            body = json.dumps({"name": bucket}).encode()
            _gcs("POST", "/storage/v1/b?project=test", body, "application/json")


def _gcs(method: str, path: str, data: bytes, kind: str = "application/octet-stream") -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{GCS_PORT}{path}", data=data, method=method)
    request.add_header("Content-Type", kind)
    with urllib.request.urlopen(request, timeout=10):
        pass


_running: list[Stores] = []  # the servers, once started


def start() -> Stores:
    """Both servers, started on the first call and running until the tests end (in daemon
    threads), with ``ENVIRONMENT`` set."""
    if _running:
        return _running[0]
    from gcp_storage_emulator.server import create_server
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    os.environ.update(ENVIRONMENT)
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    gcs = create_server("127.0.0.1", GCS_PORT, in_memory=True)
    gcs._api.daemon = True  # a thread that is not would keep pytest from exiting
    s3.start()
    gcs.start()
    _running.append(Stores())
    return _running[0]
