"""A throwaway Ceph RGW (a real S3 implementation) on loopback, for the store-facing tests.

One `ceph-mon`, one `ceph-osd` on memstore (objects in RAM, no disk device) and one
`radosgw` with the beast frontend, made from Debian's packages (`radosgw ceph-mon
ceph-osd`, Ceph 16). With `https=True` beast also serves TLS with a self-signed
certificate for 127.0.0.1, and `ca_file` is what a client must trust.

What it takes to run this without cephadm or systemd:
- `auth ... required = none`: no keyrings to hand around; radosgw then also needs
  `ms mon client mode = crc` or it loops on auth error -13;
- pool size 1 (`mon allow pool size one`): one OSD holds every object;
- `rgw lc debug interval = 10`: a lifecycle "day" lasts 10 s (and the lifecycle runs as often).
It answers requests about 10-15 s after `start()`.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from support.forward_proxy import EGRESS_NAME

ACCESS_KEY = "mediagate-rgw-key"
SECRET_KEY = "mediagate-rgw-secret"
# RGW's default zonegroup takes requests signed for any region; buckets made without a
# location constraint are "us-east-1" to botocore.
REGION = "us-east-1"
BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
START_TIMEOUT = 90


def available() -> bool:
    return all(shutil.which(name) for name in BINARIES)


def _self_signed_certificate(cert: Path, key: Path) -> None:
    """A certificate for 127.0.0.1 that is its own CA, so one file is all a client trusts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mediagate test RGW")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                    x509.DNSName(EGRESS_NAME),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), False)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class RgwServer:
    def __init__(self, *, mon_port: int, http_port: int, https_port: int | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mediagate-rgw-"))
        self._mon_port = mon_port
        self._http_port = http_port
        self._https_port = https_port
        self._conf = self.root / "ceph.conf"
        self._processes: list[subprocess.Popen[bytes]] = []
        self.ca_file: Path | None = None

    @property
    def endpoint(self) -> str:
        if self._https_port is not None:
            return f"https://127.0.0.1:{self._https_port}"
        return f"http://127.0.0.1:{self._http_port}"

    def _config(self, fsid: str) -> str:
        root = self.root
        frontend = f"beast endpoint=127.0.0.1:{self._http_port}"
        if self._https_port is not None:
            frontend += (
                f" ssl_endpoint=127.0.0.1:{self._https_port}"
                f" ssl_certificate={root / 'rgw.crt'} ssl_private_key={root / 'rgw.key'}"
            )
        return f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{self._mon_port}
mon initial members = a
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd objectstore = memstore
memstore device bytes = 4294967296
run dir = {root}/run
admin socket = {root}/run/$name.asok
log file = {root}/log/$name.log
mon data = {root}/mon
osd data = {root}/osd
keyring = {root}/keyring

[client.rgw.test]
rgw frontends = {frontend}
ms mon client mode = crc
rgw lc debug interval = 10
rgw data = {root}/rgw
"""

    def _run(self, *command: str) -> str:
        answer = subprocess.run(
            [*command, "-c", str(self._conf)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if answer.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({answer.returncode}): {answer.stderr}")
        return answer.stdout

    def _daemon(self, *command: str) -> None:
        log = (self.root / "log" / f"{command[0]}.out").open("wb")
        self._processes.append(
            subprocess.Popen(
                [*command, "-f", "-c", str(self._conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()

    def start(self) -> None:
        for folder in ("run", "log", "mon", "osd", "rgw"):
            (self.root / folder).mkdir()
        fsid = str(uuid.uuid4())
        self._conf.write_text(self._config(fsid))
        if self._https_port is not None:
            self.ca_file = self.root / "rgw.crt"
            _self_signed_certificate(self.ca_file, self.root / "rgw.key")
        monmap = str(self.root / "monmap")
        address = f"[v2:127.0.0.1:{self._mon_port}]"
        subprocess.run(
            ["monmaptool", "--create", "--addv", "a", address, "--fsid", fsid, monmap],
            capture_output=True,
            timeout=60,
            check=True,
        )
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap)
        self._daemon("ceph-mon", "-i", "a")
        osd_uuid = str(uuid.uuid4())
        osd_id = self._run("ceph", "--connect-timeout", "30", "osd", "new", osd_uuid).strip()
        self._run("ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        self._daemon("ceph-osd", "-i", osd_id)
        self._daemon("radosgw", "-n", "client.rgw.test")
        self._wait_for_answers()
        self._run(
            "radosgw-admin",
            "user",
            "create",
            "--uid",
            "mediagate-test",
            "--display-name",
            "mediagate tests",
            "--access-key",
            ACCESS_KEY,
            "--secret-key",
            SECRET_KEY,
        )

    def _wait_for_answers(self) -> None:
        url = f"http://127.0.0.1:{self._http_port}/"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for process in self._processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited: {self._log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"radosgw did not answer within {START_TIMEOUT} s: {self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        """The end of each daemon's log, for a failure message (the folder is removed)."""
        tails = []
        for log in sorted((self.root / "log").glob("*")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(tails)

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.send_signal(signal.SIGTERM)
        for process in reversed(self._processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
