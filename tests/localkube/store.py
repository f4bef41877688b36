"""The object store: one global resourceVersion counter, like etcd's revision, and a bounded event history
from which watches are served.

Everything that writes holds `Store.lock`, so a read-modify-write in the API layer is atomic. Objects are
plain JSON dicts; callers get deep copies and never share structure with the store.
"""

from __future__ import annotations

import collections
import copy
import queue
import threading
from dataclasses import dataclass


@dataclass
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    gr: str  # group resource, e.g. "pods" or "streamjobs.stator.dev"
    namespace: str
    name: str
    obj: dict  # the object after the change (for DELETED: the last state, with the deletion's RV)
    prev: dict | None  # the object before the change


class Watcher:
    """A registered listener. Events are pushed under the store lock, so a reader that takes the lock and
    finds its queue empty knows it has seen every event up to `Store.rv`."""

    def __init__(self, store: "Store", gr: str | None, namespace: str | None, maxsize: int):
        self.store = store
        self.gr = gr
        self.namespace = namespace
        self.q: queue.Queue = queue.Queue()
        self.maxsize = maxsize
        self.overflowed = False
        self.closed = False

    def wants(self, ev: Event) -> bool:
        if self.gr is not None and ev.gr != self.gr:
            return False
        if self.namespace and ev.namespace != self.namespace:
            return False
        return True

    def push(self, ev: Event) -> None:
        if self.closed:
            return
        if self.q.qsize() >= self.maxsize:
            self.overflowed = True
            self.q.put(None)
            self.closed = True
            return
        self.q.put(ev)

    def close(self) -> None:
        self.store.unregister(self)
        self.closed = True
        self.q.put(None)


class Store:
    def __init__(self, history: int = 10000, watcher_queue: int = 100000):
        self.lock = threading.RLock()
        self.rv = 1
        self.objects: dict[str, dict[tuple[str, str], dict]] = collections.defaultdict(dict)
        self.history: collections.deque[Event] = collections.deque(maxlen=history)
        # Events at or below this revision are gone from the history: a watch from an older version gets 410.
        self.compacted = 1
        self.watchers: list[Watcher] = []
        self.watcher_queue = watcher_queue

    # -- reads -------------------------------------------------------------------------------------

    def get(self, gr: str, ns: str, name: str) -> dict | None:
        with self.lock:
            o = self.objects[gr].get((ns, name))
            return copy.deepcopy(o) if o is not None else None

    def peek(self, gr: str, ns: str, name: str) -> dict | None:
        """Like get, without the copy: the caller must not modify the result."""
        return self.objects[gr].get((ns, name))

    def list(self, gr: str, ns: str | None = None) -> tuple[list[dict], int]:
        with self.lock:
            items = [copy.deepcopy(o) for (ons, _), o in sorted(self.objects[gr].items()) if not ns or ons == ns]
            return items, self.rv

    def iter_all(self, gr: str):
        """Live objects of one resource (no copies; hold the lock)."""
        return list(self.objects[gr].values())

    def resources(self) -> list[str]:
        return list(self.objects.keys())

    # -- writes ------------------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self.rv += 1
        if len(self.history) == self.history.maxlen:
            self.compacted = self.history[0].rv
        return self.rv

    def _emit(self, ev: Event) -> None:
        self.history.append(ev)
        for w in list(self.watchers):
            if w.wants(ev):
                w.push(ev)

    def create(self, gr: str, obj: dict) -> dict:
        with self.lock:
            md = obj["metadata"]
            key = (md.get("namespace", ""), md["name"])
            assert key not in self.objects[gr], key
            rv = self._next_rv()
            md["resourceVersion"] = str(rv)
            stored = copy.deepcopy(obj)
            self.objects[gr][key] = stored
            self._emit(Event(rv, "ADDED", gr, key[0], key[1], copy.deepcopy(stored), None))
            return copy.deepcopy(stored)

    def update(self, gr: str, obj: dict) -> dict:
        with self.lock:
            md = obj["metadata"]
            key = (md.get("namespace", ""), md["name"])
            prev = self.objects[gr][key]
            rv = self._next_rv()
            md["resourceVersion"] = str(rv)
            stored = copy.deepcopy(obj)
            self.objects[gr][key] = stored
            self._emit(Event(rv, "MODIFIED", gr, key[0], key[1], copy.deepcopy(stored), prev))
            return copy.deepcopy(stored)

    def delete(self, gr: str, ns: str, name: str) -> dict:
        with self.lock:
            prev = self.objects[gr].pop((ns, name))
            rv = self._next_rv()
            gone = copy.deepcopy(prev)
            gone["metadata"]["resourceVersion"] = str(rv)
            self._emit(Event(rv, "DELETED", gr, ns, name, copy.deepcopy(gone), prev))
            return gone

    def compact(self) -> None:
        """Forget the whole history, as etcd compaction does: every older version becomes too old."""
        with self.lock:
            self.history.clear()
            self.compacted = self.rv

    # -- watches -----------------------------------------------------------------------------------

    def register(self, gr: str | None, ns: str | None, since: int | None) -> tuple[Watcher, list[Event]]:
        """Registers a watcher and returns it with the events after `since` (None: no backlog).
        Raises ValueError when `since` is older than the history holds."""
        with self.lock:
            backlog: list[Event] = []
            if since is not None:
                if since < self.compacted:
                    raise ValueError(f"too old resource version: {since} ({self.compacted + 1})")
                w0 = Watcher(self, gr, ns, 0)
                backlog = [e for e in self.history if e.rv > since and w0.wants(e)]
            w = Watcher(self, gr, ns, self.watcher_queue)
            self.watchers.append(w)
            return w, backlog

    def unregister(self, w: Watcher) -> None:
        with self.lock:
            if w in self.watchers:
                self.watchers.remove(w)
