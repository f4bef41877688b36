"""Timestamps in the forms the Kubernetes API uses."""

from __future__ import annotations

import datetime as _dt


def rfc3339() -> str:
    """metav1.Time: seconds."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time() -> str:
    """metav1.MicroTime: microseconds (a Lease's renewTime)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
