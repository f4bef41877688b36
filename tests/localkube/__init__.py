"""localkube: a local Kubernetes stand-in for Stator's end-to-end tests and demo.

An API server (HTTP on loopback) with the semantics a controller depends on, the control-plane loops
around it, and a kubelet that runs pods' containers as local processes. It is a test fixture, not product
code: see tests/README.md for how to use it and tests/DIFFERENCES.md for where it departs from a real
cluster.
"""

from .cluster import LocalKube

__all__ = ["LocalKube"]
