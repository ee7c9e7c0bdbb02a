#!/usr/bin/env python3
"""The tables of scripts/bench, from the JSON lines its runs wrote (one file, every size).

Rows: `synod-load` results (label leader / follower / etcd-leader), preloads, `rss` samples
(system, phase: empty / loaded / end / restarted / after-restart), `status`, `catchup`, `etcd-db`, `loadavg`;
with --durable also `mode` (the data directory and its file system), `wal` (each replica's WAL
counters over one put run) and `restart` (a full-cluster kill -9 and restart).
"""
import json
import sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
loads = [r for r in rows if "rate" in r]
OP = {"etcd-put": "put", "etcd-get": "get", "etcd-get-seq": "get-seq"}
NAME = {"put": "put", "get": "lin get", "get-seq": "seq get"}
runs = {}
for r in loads:
    system = "etcd" if r["label"].startswith("etcd") else "synod"
    who = "leader" if system == "etcd" else r["label"]
    runs[(system, r["keys"], OP.get(r["op"], r["op"]), r["concurrency"], who)] = r
sizes = sorted({r["keys"] for r in loads})
concs = sorted({r["concurrency"] for r in loads})
ops = ["put", "get", "get-seq"]
mode = next((r for r in rows if r.get("label") == "mode"), None)
durable = bool(mode and mode.get("durable"))


def ms(x):
    return f"{x:.1f}m"


def rss(system, keys, phase):
    return [r["rss_kib"] for r in rows if r.get("label") == "rss" and r["system"] == system and r["keys"] == keys and r["phase"] == phase]


for k in sizes:
    print(f"\n== Synod, {k} keys: leader and follower")
    print(f"{'op':8} {'c':>5} | {'leader/s':>10} {'p50':>7} {'p99':>8} | {'follower/s':>10} {'p50':>7} {'p99':>8} | {'f/l':>5} {'errors':>7}")
    for c in concs:
        for op in ops:
            lead, fol = runs.get(("synod", k, op, c, "leader")), runs.get(("synod", k, op, c, "follower"))
            if not lead or not fol:
                continue
            print(
                f"{NAME[op]:8} {c:>5} | {lead['rate']:>10.0f} {ms(lead['p50_ms']):>7} {ms(lead['p99_ms']):>8} | "
                f"{fol['rate']:>10.0f} {ms(fol['p50_ms']):>7} {ms(fol['p99_ms']):>8} | {fol['rate'] / max(lead['rate'], 1):>5.2f} {lead['errors'] + fol['errors']:>7}"
            )
    for r in rows:
        if r.get("keys") != k:
            continue
        if r.get("label") in ("preload", "etcd-preload"):
            print(f"{'etcd' if r['label'].startswith('etcd') else 'synod'} preload: {k} keys in {r['seconds']:.1f} s")
        if r.get("label") == "status":
            print(f"/v1/status after preload: {r['ms']} ms")
        if r.get("label") == "mode" and r.get("durable"):
            print(f"durable: data directories under {r['dir']} ({r['fs']})")
    wal = [r for r in rows if r.get("label") == "wal" and r["keys"] == k]
    if wal:
        print(f"\n== Synod write-ahead log over each put run, {k} keys: per replica (leader first), fsyncs per second,")
        print("   records (accepted entries and promises) and commands (applied) per fsync")
        print(f"{'c':>5} {'via':8} | " + " | ".join(f"{'replica':>8} {'fsync/s':>8} {'rec/f':>6} {'cmd/f':>6}" for _ in wal[0]["replicas"]))
        for r in wal:
            reps = sorted(r["replicas"], key=lambda x: (x["role"] != "leader", x["id"]))
            cells = [
                f"{str(x['id']) + ('L' if x['role'] == 'leader' else 'F'):>8} {x['fsyncs'] / max(r['seconds'], 1e-9):>8.0f} "
                f"{x['records'] / max(x['fsyncs'], 1):>6.1f} {x['commands'] / max(x['fsyncs'], 1):>6.1f}"
                for x in reps
            ]
            print(f"{r['concurrency']:>5} {r['who']:8} | " + " | ".join(cells))

if len(sizes) > 1:
    b = sizes[0]
    print(f"\n== Scaling (Synod, leader side), each size relative to {b} keys; target: rate x >= 0.8, p99 x <= 3")
    print(f"{'op':8} {'c':>5} {'keys':>9} | {'rate/s':>9} {'p99':>8} | {'rate x':>7} {'p99 x':>6}")
    for op in ops:
        for c in concs:
            base = runs.get(("synod", b, op, c, "leader"))
            for k in sizes:
                r = runs.get(("synod", k, op, c, "leader"))
                if not r or not base:
                    continue
                print(
                    f"{NAME[op]:8} {c:>5} {k:>9} | {r['rate']:>9.0f} {ms(r['p99_ms']):>8} | "
                    f"{r['rate'] / max(base['rate'], 1):>7.2f} {r['p99_ms'] / max(base['p99_ms'], 0.001):>6.2f}"
                )

if any(s == "etcd" for (s, *_rest) in runs):
    if durable:
        print("\n== Synod durable vs etcd with fsync (both through their leader; etcd 3 members, its v3 JSON gateway;")
        print(f"   both with their data on {mode['fs']})")
        print("   targets: put S/E >= 3 at 64 and 256 connections, 1-connection put p50 S <= E")
    else:
        print("\n== Synod vs etcd (both through their leader; etcd 3 members, its v3 JSON gateway)")
        print(f"   targets at {sizes[0]} keys: put S/E >= 3, lin get S/E >= 5")
    print(f"{'op':8} {'c':>5} {'keys':>9} | {'synod/s':>9} {'p50':>7} {'p99':>8} | {'etcd/s':>9} {'p50':>7} {'p99':>8} | {'S/E':>6} {'errors':>7}")
    for k in sizes:
        for c in concs:
            for op in ops:
                s, e = runs.get(("synod", k, op, c, "leader")), runs.get(("etcd", k, op, c, "leader"))
                if not s or not e:
                    continue
                print(
                    f"{NAME[op]:8} {c:>5} {k:>9} | {s['rate']:>9.0f} {ms(s['p50_ms']):>7} {ms(s['p99_ms']):>8} | "
                    f"{e['rate']:>9.0f} {ms(e['p50_ms']):>7} {ms(e['p99_ms']):>8} | {s['rate'] / max(e['rate'], 1):>6.2f} {s['errors'] + e['errors']:>7}"
                )
    if durable:
        for k in sizes:
            for c in concs:
                s, e = runs.get(("synod", k, "put", c, "leader")), runs.get(("etcd", k, "put", c, "leader"))
                if not s or not e:
                    continue
                if c in (64, 256):
                    x = s["rate"] / max(e["rate"], 1)
                    print(f"{k} keys, c={c}: put {x:.2f}x etcd with fsync (target >= 3): {'met' if x >= 3 else 'NOT met'}")
                if c == 1:
                    ok = s["p50_ms"] <= e["p50_ms"]
                    print(
                        f"{k} keys, c=1: put p50 {s['p50_ms']:.2f} ms vs etcd {e['p50_ms']:.2f} ms = {s['p50_ms'] / max(e['p50_ms'], 1e-9):.2f}x "
                        f"(target <= 1): {'met' if ok else 'NOT met'}"
                    )

print("\n== Memory: RSS per replica / member (MiB), and bytes per key = (mean RSS after preload - mean RSS empty) / keys")
for k in sizes:
    for system in ("synod", "etcd"):
        empty, loaded, end = rss(system, k, "empty"), rss(system, k, "loaded"), rss(system, k, "end")
        if not loaded:
            continue
        mib = lambda xs: "/".join(f"{x / 1024:.0f}" for x in xs) or "-"
        per_key = (sum(loaded) / len(loaded) - sum(empty) / max(len(empty), 1)) * 1024 / k if empty else float("nan")
        extra = ""
        if system == "etcd":
            db = [r["db_bytes"] for r in rows if r.get("label") == "etcd-db" and r["keys"] == k]
            if db:
                extra = f"; its bbolt file {db[0] / 2**20:.0f} MiB (on {'disk' if durable else 'tmpfs'}; mapped pages count in RSS)"
        print(f"{system:5} {k:>9} keys: empty {mib(empty)}, after preload {mib(loaded)}, after the loads {mib(end)}; {per_key:,.0f} B/key{extra}")
    s, e = rss("synod", k, "loaded"), rss("etcd", k, "loaded")
    if s and e and rss("synod", k, "empty") and rss("etcd", k, "empty"):
        pk = lambda sys_: (sum(rss(sys_, k, "loaded")) / len(rss(sys_, k, "loaded")) - sum(rss(sys_, k, "empty")) / len(rss(sys_, k, "empty"))) * 1024 / k
        print(f"{'':5} {k:>9} keys: Synod/etcd bytes per key {pk('synod') / max(pk('etcd'), 1e-9):.2f}")

for r in rows:
    if r.get("label") != "catchup":
        continue
    print(f"\n== Catch-up at {r['keys']} keys (kill -9 a follower, restart it; put load on the leader, c={r['concurrency']})")
    if r["served"]:
        print(f"restarted follower serves (status and a min_index read at the leader's index) {r['restart_to_serving_s']:.1f} s after its restart")
    else:
        print(f"restarted follower did NOT serve within {r['timeout_s']} s (status serving after: {r['restart_to_status_serving_s']})")
    if r.get("restart_to_status_serving_s") is not None:
        print(f"  (/v1/status said serving after {r['restart_to_status_serving_s']:.1f} s)")
    worst = r.get("worst_second_rate")
    print(
        f"leader writes: baseline {r['baseline_rate']:.0f}/s (before {r.get('before_rate', 0):.0f}, after {r.get('after_rate', 0):.0f}); during the transfer ({r['transfer_s']:.1f} s) {r['transfer_rate']:.0f}/s = "
        f"{r['ratio']:.2f}x (target >= 0.7)" + (f"; slowest second {worst:.0f}/s = {worst / max(r['baseline_rate'], 1e-9):.2f}x" if worst is not None else "")
    )
    if "leader_cores_baseline" in r:
        print(
            f"  CPU (cores of {r.get('cores', '?')}): leader {r['leader_cores_baseline']:.2f} in the baseline, {r['leader_cores_transfer']:.2f} during the transfer; "
            f"the restarted replica {r['restarted_cores']:.2f} ({r['restarted_cpu_s']:.1f} CPU-s)"
        )
    for x in rows:
        if x.get("label") == "rss" and x["phase"] == "restarted" and x["keys"] == r["keys"]:
            print(f"  restarted replica RSS {x['rss_kib'] / 1024:.0f} MiB")

for r in rows:
    if r.get("label") != "restart":
        continue
    print(f"\n== Full-cluster restart at {r['keys']} keys (kill -9 of all {r['nodes']} replicas at once, {r['data_mib']:.0f} MiB in their data dirs; same command lines)")
    fmt = lambda x: "never" if x is None else f"{x:.1f} s"
    print(
        f"after the restart: linearizable read of the last preloaded key {fmt(r['read_s'])}, write {fmt(r['write_s'])}; "
        f"serving (both) {fmt(r['serving_s'])}" + (f" (gave up after {r['timeout_s']} s)" if r["serving_s"] is None else "")
    )
    print(
        f"  each replica's /v1/status serving (its own view; not proof that its store is back): {', '.join(fmt(x) for x in r['replica_serving_s'])}; "
        f"the ports closed {r['kill_to_start_s']:.2f} s after the kill"
    )
    print(f"  store index before the kill {r['index_before']}, after {r['index_after']}")
    after = rss("synod", r["keys"], "after-restart")
    if after:
        print(f"  RSS after the restart (MiB): {'/'.join(f'{x / 1024:.0f}' for x in after)}")

avg = {r["when"]: r["avg"] for r in rows if r.get("label") == "loadavg"}
if avg:
    print(f"\nload average (1/5/15 min) before: {avg.get('before', '?')}, after: {avg.get('after', '?')}")
