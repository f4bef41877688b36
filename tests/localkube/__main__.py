"""python -m localkube serve|kubelet [options]

serve:   the whole local cluster (control plane and stand-in kubelet) until Ctrl-C or SIGTERM.
kubelet: only the stand-in kubelet, against any API server (what `serve` starts as its own process).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from .client import Kube
from .cluster import LocalKube
from .images import ImageMap
from .kubelet import Kubelet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m localkube")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the control plane and the stand-in kubelet")
    s.add_argument("--dir", default=None, help="working directory (default: a new temporary directory)")
    s.add_argument("--image-map", default=os.environ.get("STATOR_IMAGE_MAP"),
                   help="YAML image map (default: $STATOR_IMAGE_MAP)")
    s.add_argument("--crds", action="append", default=[], help="glob of CRD files to create at start (repeatable)")
    s.add_argument("--no-kubelet", action="store_true", help="run no node: pods stay Pending")
    s.add_argument("--backoff-base", type=float, default=10.0, help="first crash-loop back-off in seconds")
    s.add_argument("--backoff-max", type=float, default=300.0, help="longest crash-loop back-off in seconds")
    s.add_argument("-v", "--verbose", action="store_true")

    k = sub.add_parser("kubelet", help="run the stand-in kubelet against an API server")
    k.add_argument("--kubeconfig", required=True, help="the node's credentials (system:node:NAME)")
    k.add_argument("--scheduler-kubeconfig", default=None,
                   help="credentials to bind unscheduled pods with (system:kube-scheduler); none: bind nothing")
    k.add_argument("--dir", required=True, help="where pods' volumes and logs live")
    k.add_argument("--node-name", default="localkube")
    k.add_argument("--image-map", default=os.environ.get("STATOR_IMAGE_MAP"))
    k.add_argument("--serving-cert", default=None, help="TLS certificate of the log endpoint")
    k.add_argument("--serving-key", default=None)
    k.add_argument("--client-ca", default=None, help="CA that signs the API server's client certificate")
    k.add_argument("--backoff-base", type=float, default=10.0)
    k.add_argument("--backoff-max", type=float, default=300.0)
    k.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO if args.cmd == "kubelet" else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())

    if args.cmd == "kubelet":
        serving = (args.serving_cert, args.serving_key) if args.serving_cert else None
        kubelet = Kubelet(Kube(args.kubeconfig), args.dir, ImageMap.load(args.image_map), node_name=args.node_name,
                          scheduler=Kube(args.scheduler_kubeconfig) if args.scheduler_kubeconfig else None,
                          backoff_base=args.backoff_base, backoff_max=args.backoff_max, serving=serving,
                          client_ca=args.client_ca)
        kubelet.start()
        print(f"kubelet ready: node={args.node_name} logs=https://127.0.0.1:{kubelet.log_port}", flush=True)
        try:
            done.wait()
        finally:
            kubelet.stop()
        return 0

    lk = LocalKube(workdir=args.dir, image_map=args.image_map, crds=args.crds, kubelet=not args.no_kubelet,
                   backoff_base=args.backoff_base, backoff_max=args.backoff_max)
    try:
        lk.start()
        print(f"localkube ready in {lk.ready_seconds:.1f}s: server={lk.url} kubeconfig={lk.kubeconfig} "
              f"dir={lk.workdir}", flush=True)
        done.wait()
    finally:
        lk.stop()
    print("localkube stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
