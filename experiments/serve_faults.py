"""Faults under load: several workers, concurrent clients, kill -9 of the whole server, restart.

    python experiments/serve_faults.py --bundle BUNDLE --workers 4 --clients 8 --requests 400 --rounds 3

Each round starts `python -m mmrec.serve` on a copy of the bundle (the live store carries over
between rounds), sends a fixed mix of recommend / search / add / delete requests from N client
threads, kills every server process with SIGKILL in the middle of the burst, restarts, and checks
that every acknowledged (2xx) add is there and every acknowledged delete is gone. It reports
acknowledged writes lost (goal 0), 5xx answers (goal 0), the delay until an add is visible through a
fresh connection (any worker), and p50/p99 latency per endpoint. Only loopback is contacted.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from serving_process import TOKEN, free_port, start_server


def burst(url: str, catalogue: list[str], clients: int, requests: int, round_id: int, kill_after: float, server):
    """Mixed requests from ``clients`` threads; the server is killed after ``kill_after`` of them."""
    acked_adds, acked_deletes, latencies, errors5xx = [], [], {}, []
    lock, sent = threading.Lock(), [0]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    killed = threading.Event()

    def one(i: int, client: httpx.Client) -> None:
        kind = ("recommend", "search", "add", "delete")[(i + i // clients) % 4]  # every client sends every kind
        start = time.perf_counter()
        try:
            if kind == "recommend":
                r = client.post(f"{url}/recommend", json={"history": random.sample(catalogue, 3), "k": 10})
            elif kind == "search":
                r = client.post(f"{url}/search", json={"query": "live music", "k": 10})
            elif kind == "add":
                item = f"r{round_id}-{i}"
                r = client.post(f"{url}/items", json={"item_id": item, "title": f"fault test {item}"}, headers=auth)
                if r.status_code == 201:
                    with lock:
                        acked_adds.append(item)
            else:
                with lock:  # the oldest acknowledged add not yet deleted, else one never added (a 404)
                    pending = [a for a in acked_adds if a not in acked_deletes]
                item = pending[0] if pending else f"absent-{i}"
                r = client.delete(f"{url}/items/{item}", headers=auth)
                if r.status_code == 200:
                    with lock:
                        acked_deletes.append(item)
        except httpx.TransportError:
            return  # the server was killed: this request was never acknowledged
        with lock:
            latencies.setdefault(kind, []).append(time.perf_counter() - start)
            if r.status_code >= 500:
                errors5xx.append((kind, r.status_code))

    def client_loop(k: int) -> None:
        with httpx.Client(timeout=60) as client:
            for i in range(k, requests, clients):
                if killed.is_set():
                    return
                with lock:
                    sent[0] += 1
                    if sent[0] >= kill_after * requests and not killed.is_set():
                        killed.set()
                        os.killpg(server.pid, signal.SIGKILL)  # every server process at once
                        return
                one(i, client)

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return acked_adds, acked_deletes, latencies, errors5xx


def visibility_delay(url: str, tries: int = 20) -> float:
    """Seconds from an acknowledged add to the first fresh connection (any worker) that serves it."""
    delays = []
    for i in range(tries):
        item = f"vis-{time.time_ns()}-{i}"
        r = httpx.post(
            f"{url}/items", json={"item_id": item, "title": "visibility"}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        acked = time.perf_counter()
        assert r.status_code == 201, r.text
        while httpx.get(f"{url}/items/{item}/similar", params={"k": 1}).status_code != 200:
            pass
        delays.append(time.perf_counter() - acked)
    return float(np.max(delays))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log", type=Path, default=None, help="append the servers' logs here (a 5xx's traceback)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mmrec-faults-"))
    bundle = work / "bundle"
    shutil.copytree(args.bundle, bundle, ignore=shutil.ignore_patterns("live", "uploads"))
    random.seed(0)
    lost, wrongly_back, errors, latencies, all_adds, delays, all_deletes = 0, 0, [], {}, [], [], 0
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    server = start_server(bundle, port, args.workers, args.log, timeout=300)
    catalogue = [i["item_id"] for i in httpx.post(f"{url}/search", json={"query": "a", "k": 50}).json()["items"]]
    for round_id in range(args.rounds):
        delays.append(visibility_delay(url))
        adds, deletes, lat, err = burst(url, catalogue, args.clients, args.requests, round_id, 0.6, server)
        server.wait(timeout=60)
        server = start_server(
            bundle, port, args.workers, args.log, timeout=300
        )  # after kill -9: every acknowledged write must be there
        for kind, values in lat.items():
            latencies.setdefault(kind, []).extend(values)
        errors += err
        all_adds += adds
        all_deletes += len(deletes)
        for item in set(adds) - set(deletes):
            lost += httpx.get(f"{url}/items/{item}/similar", params={"k": 1}).status_code != 200
        for item in deletes:
            wrongly_back += httpx.get(f"{url}/items/{item}/similar", params={"k": 1}).status_code != 404
        print(f"round {round_id}: {len(adds)} adds and {len(deletes)} deletes acknowledged before kill -9", flush=True)
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)
    shutil.rmtree(work, ignore_errors=True)
    setup = f"{args.workers} workers, {args.clients} clients, {args.requests} requests x {args.rounds} rounds"
    print(f"\n{setup}, kill -9 at 60%")
    print(f"acknowledged adds lost: {lost} of {len(all_adds)}; deletes undone: {wrongly_back} of {all_deletes}")
    print(f"5xx answers: {len(errors)}")
    print(f"cross-worker visibility: an add was served by a fresh connection within {max(delays) * 1000:.1f} ms (max)")
    print("| endpoint | requests | p50 ms | p99 ms |\n|---|---|---|---|")
    for kind, values in sorted(latencies.items()):
        ms = np.array(values) * 1000
        print(f"| {kind} | {len(ms)} | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} |")


if __name__ == "__main__":
    main()
