"""The real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager,
built from their Go modules (tests/controlplane), started in seconds with fresh certificates and keys.

- etcd keeps its data in a temporary directory (no fsync: the data dies with the test run anyway).
- kube-apiserver serves HTTPS on 127.0.0.1 with authorization Node,RBAC, the admission plugins a
  cluster enables by default (PodSecurity among them) plus NodeRestriction, service-account tokens
  signed by a key made at start, and kubelet log requests sent with a client certificate.
- kube-controller-manager runs every default controller (garbage collector, namespaces, service
  accounts and their tokens, root CA publisher, persistent volumes with the host-path provisioner,
  deployments and replica sets, endpoints, pod GC, node lifecycle...) each with its own service
  account's credentials, as a cluster does.

Identities are client certificates signed by the cluster CA: an admin (system:masters) for tests and
people, the controller manager, the scheduler (for the stand-in kubelet's binder) and the node
(system:node:<name>, for the stand-in kubelet). `kubeconfig(name)` gives each one's kubeconfig.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .process import ManagedProcess

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(os.path.dirname(HERE), "controlplane", "build")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.0.0.0/24"

# Requests of service accounts outside kube-system (the operator, apps) go to the audit log, so a test
# run can show every request the API server refused them (`ControlPlane.refused()`).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}

# name -> (common name, organizations): the client identities the launcher writes kubeconfigs for.
IDENTITIES = {
    "admin": ("stator-e2e-admin", ["system:masters"]),
    "controller-manager": ("system:kube-controller-manager", []),
    "scheduler": ("system:kube-scheduler", []),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", []),
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def control_plane_binaries() -> str:
    """The directory with etcd, kube-apiserver and kube-controller-manager: $STATOR_CONTROLPLANE_BIN, or
    tests/controlplane/build's output (which builds them once per machine)."""
    given = os.environ.get("STATOR_CONTROLPLANE_BIN")
    if given:
        return given
    out = subprocess.run([BUILD], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    return out.splitlines()[-1]


# ---------------------------------------------------------------------------------------------------
# certificates


class Pki:
    """A cluster CA and the certificates signed by it, as PEM files in `dir`."""

    def __init__(self, dir: str):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stator-e2e-ca")])
        now = dt.datetime.now(dt.timezone.utc)
        self._ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                    .public_key(self._ca_key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=7))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                    .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                 content_commitment=False, key_encipherment=False,
                                                 data_encipherment=False, key_agreement=False,
                                                 encipher_only=False, decipher_only=False), critical=True)
                    .sign(self._ca_key, hashes.SHA256()))
        self.ca_cert = self._write("ca.crt", self._ca.public_bytes(serialization.Encoding.PEM))
        self.ca_key = self._write("ca.key", _key_pem(self._ca_key))

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
        return path

    def issue(self, name: str, cn: str, orgs: list[str] = (), server: bool = False, client: bool = True,
              ips: list[str] = (), dns: list[str] = ()) -> tuple[str, str]:
        """Writes <name>.crt and <name>.key; returns their paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        now = dt.datetime.now(dt.timezone.utc)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        b = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(self._ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=7))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        sans = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips] + [x509.DNSName(d) for d in dns]
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self._ca_key, hashes.SHA256())
        return (self._write(f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM)),
                self._write(f"{name}.key", _key_pem(key)))

    def signing_key(self, name: str) -> tuple[str, str]:
        """A key pair for service-account tokens: <name>.key (private) and <name>.pub."""
        key = ec.generate_private_key(ec.SECP256R1())
        pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return self._write(f"{name}.key", _key_pem(key)), self._write(f"{name}.pub", pub)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_kubeconfig(path: str, server: str, ca: str, cert: str | None = None, key: str | None = None,
                     token: str | None = None, user: str = "user", namespace: str = "default") -> str:
    u: dict = {}
    if cert:
        u = {"client-certificate": cert, "client-key": key}
    if token:
        u = {"token": token}
    cfg = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": user, "user": u}],
        "contexts": [{"name": user, "context": {"cluster": "local", "user": user, "namespace": namespace}}],
        "current-context": user,
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(cfg, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------------
# the control plane


class ControlPlane:
    """etcd, kube-apiserver and kube-controller-manager on loopback. start() returns once the API server
    is ready and the controller manager has made the default namespace's service account."""

    def __init__(self, workdir: str | None = None, bin_dir: str | None = None, node_name: str = "localkube"):
        self.workdir = workdir or tempfile.mkdtemp(prefix="controlplane-")
        self.bin_dir = bin_dir
        self.node_name = node_name
        self.logs = os.path.join(self.workdir, "logs")
        self.procs: list[ManagedProcess] = []
        self.pki: Pki | None = None
        self.server = ""
        self.kubeconfigs: dict[str, str] = {}

    def kubeconfig(self, identity: str = "admin") -> str:
        return self.kubeconfigs[identity]

    def start(self) -> "ControlPlane":
        t0 = time.monotonic()
        bin_dir = self.bin_dir or control_plane_binaries()
        os.makedirs(self.logs, exist_ok=True)
        pki = self.pki = Pki(os.path.join(self.workdir, "pki"))
        api_port = free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        serving = pki.issue("apiserver", "kube-apiserver", server=True, client=False,
                            ips=["127.0.0.1", "10.0.0.1"],
                            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                 "kubernetes.default.svc.cluster.local"])
        for name, (cn, orgs) in IDENTITIES.items():
            cert, key = pki.issue(name, cn, orgs)
            self.kubeconfigs[name] = write_kubeconfig(os.path.join(self.workdir, f"{name}.kubeconfig"), self.server,
                                                      pki.ca_cert, cert, key, user=name)
        node_cert, node_key = pki.issue("node", f"system:node:{self.node_name}", ["system:nodes"])
        self.kubeconfigs["node"] = write_kubeconfig(os.path.join(self.workdir, "node.kubeconfig"), self.server,
                                                    pki.ca_cert, node_cert, node_key, user="node")
        sa_key, sa_pub = pki.signing_key("service-account")

        etcd_client, etcd_peer = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_client}"
        self._start("etcd", [
            os.path.join(bin_dir, "etcd"), "--name", "default", "--data-dir", os.path.join(self.workdir, "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
            "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
            "--unsafe-no-fsync", "--log-level", "warn"])
        self._wait(lambda: _http_ok(f"{etcd_url}/health"), "etcd", timeout=30)

        policy = os.path.join(self.workdir, "audit-policy.yaml")
        with open(policy, "w") as f:
            yaml.safe_dump(AUDIT_POLICY, f)
        self.audit_log = os.path.join(self.logs, "audit.log")
        kubelet_client = (os.path.join(pki.dir, "apiserver-kubelet-client.crt"),
                          os.path.join(pki.dir, "apiserver-kubelet-client.key"))
        self._start("kube-apiserver", [
            os.path.join(bin_dir, "kube-apiserver"),
            "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(api_port),
            "--tls-cert-file", serving[0], "--tls-private-key-file", serving[1],
            "--client-ca-file", pki.ca_cert,
            "--authorization-mode", "Node,RBAC",
            "--enable-admission-plugins", "NodeRestriction",
            # As kubeadm and managed clusters run it: privileged pods are Pod Security's to refuse.
            "--allow-privileged=true",
            "--service-account-issuer", SERVICE_ACCOUNT_ISSUER,
            "--service-account-key-file", sa_pub, "--service-account-signing-key-file", sa_key,
            "--api-audiences", SERVICE_ACCOUNT_ISSUER,
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--kubelet-client-certificate", kubelet_client[0], "--kubelet-client-key", kubelet_client[1],
            "--kubelet-certificate-authority", pki.ca_cert,
            "--kubelet-preferred-address-types", "InternalIP",
            # No Endpoints for the `kubernetes` Service: its only address would be loopback, which
            # Endpoints refuse; nothing here reaches the API server through that Service.
            "--endpoint-reconciler-type", "none",
            "--cert-dir", os.path.join(self.workdir, "apiserver-certs"),
            "--audit-policy-file", policy, "--audit-log-path", self.audit_log, "--audit-log-maxsize", "0",
            "--audit-log-format", "json",
            "--profiling=false", "--v=1"])
        self._wait(lambda: _https_ok(f"{self.server}/readyz", pki.ca_cert), "kube-apiserver /readyz", timeout=90)

        self._start("kube-controller-manager", [
            os.path.join(bin_dir, "kube-controller-manager"),
            "--kubeconfig", self.kubeconfigs["controller-manager"],
            "--authentication-kubeconfig", self.kubeconfigs["controller-manager"],
            "--authorization-kubeconfig", self.kubeconfigs["controller-manager"],
            "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
            "--cert-dir", os.path.join(self.workdir, "kcm-certs"),
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            "--service-account-private-key-file", sa_key,
            "--root-ca-file", pki.ca_cert,
            "--cluster-signing-cert-file", pki.ca_cert, "--cluster-signing-key-file", pki.ca_key,
            "--service-cluster-ip-range", SERVICE_CIDR,
            # Claims get host-path volumes under /tmp/hostpath_pv (StorageClass `standard`).
            "--enable-hostpath-provisioner=true",
            "--profiling=false", "--v=1"])
        self.ready_seconds = time.monotonic() - t0
        return self

    def _start(self, name: str, argv: list[str]) -> ManagedProcess:
        p = ManagedProcess(argv, name=name, log_dir=self.logs)
        p.start()
        self.procs.append(p)
        return p

    def _wait(self, fn, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if not p.alive:
                    raise RuntimeError(f"{p.name} exited with {p.proc.returncode}:\n{p.log()[-6000:]}")
            try:
                if fn():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{what} not ready within {timeout}s; logs in {self.logs}")

    def refused(self, since: int = 0) -> list[dict]:
        """Every request by a service account outside kube-system that authorization refused (from byte
        offset `since` of the audit log): a permission the chart does not grant. Refusals by admission
        (Pod Security, say) are the operator's to report, not counted here."""
        out = []
        try:
            with open(self.audit_log, "rb") as f:
                f.seek(since)
                for line in f:
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    if (ev.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid":
                        out.append(ev)
        except FileNotFoundError:
            pass
        return out

    def audit_offset(self) -> int:
        try:
            return os.path.getsize(self.audit_log)
        except OSError:
            return 0

    def check_alive(self) -> None:
        for p in self.procs:
            if not p.alive:
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}:\n{p.log()[-6000:]}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop(grace=5)
        self.procs.clear()

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def _https_ok(url: str, ca: str) -> bool:
    ctx = ssl.create_default_context(cafile=ca)
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


__all__ = ["ControlPlane", "Pki", "control_plane_binaries", "write_kubeconfig", "free_port"]
