"""localkube: a one-node Kubernetes cluster on loopback for Stator's end-to-end tests and demo.

The real control plane (etcd, kube-apiserver and kube-controller-manager, built from their Go modules
in tests/controlplane) with RBAC and Pod Security admission on, and a stand-in kubelet that runs each
pod's containers as local processes. A test fixture, not product code: see tests/README.md for how to
use it and tests/DIFFERENCES.md for what the stand-in kubelet cannot do.
"""

from .cluster import LocalKube

__all__ = ["LocalKube"]
