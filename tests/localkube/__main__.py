"""python -m localkube serve [options]: run the stand-in until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from .cluster import LocalKube


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m localkube")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the API server stand-in, its controllers and the kubelet")
    s.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    s.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    s.add_argument("--dir", default=None, help="working directory (default: a new temporary directory)")
    s.add_argument("--kubeconfig", default=None, help="where to write the kubeconfig (default: DIR/kubeconfig)")
    s.add_argument("--image-map", default=os.environ.get("STATOR_IMAGE_MAP"),
                   help="YAML image map (default: $STATOR_IMAGE_MAP)")
    s.add_argument("--crds", action="append", default=[], help="glob of CRD files to register at start (repeatable)")
    s.add_argument("--no-kubelet", action="store_true", help="do not run pods")
    s.add_argument("--backoff-base", type=float, default=10.0, help="first crash-loop back-off in seconds")
    s.add_argument("--backoff-max", type=float, default=300.0, help="longest crash-loop back-off in seconds")
    s.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    lk = LocalKube(workdir=args.dir, host=args.host, port=args.port, image_map=args.image_map, crds=args.crds,
                   kubelet=not args.no_kubelet, backoff_base=args.backoff_base, backoff_max=args.backoff_max,
                   kubeconfig=args.kubeconfig)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    lk.start()
    print(f"localkube ready: url={lk.url} kubeconfig={lk.kubeconfig} dir={lk.workdir}", flush=True)
    try:
        done.wait()
    finally:
        lk.stop()
    print("localkube stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
