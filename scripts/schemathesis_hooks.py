"""Schemathesis hooks for scripts/schemathesis (loaded with SCHEMATHESIS_HOOKS=schemathesis_hooks).

They change a generated request only where sending it as generated would wreck the run rather
than test the server; the document stays the description of what is valid.
"""
import os
import re

import schemathesis

DURATION = re.compile(r"^[0-9]+(ms|s|m)?$")
# Node ids of the cluster under test (synod dev numbers them 1..N).
LIVE = set(range(1, int(os.environ.get("SYNOD_DEV_NODES", "3")) + 1))


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    op = case.operation
    # A long-poll waits up to its `wait` (5 minutes without one): cut a valid one to 1 s.
    if case.query and "wait_index" in case.query:
        wait = case.query.get("wait")
        if wait is None or (isinstance(wait, str) and DURATION.match(wait)):
            case.query["wait"] = "1s"
    # A sequential read waits for `min_index` (3 s at most), then answers 503 `lagging`: the
    # documented answer for an index the replica has not applied yet, which a generated index far
    # beyond the cluster's would always get. Ask for index 0 instead (always reached).
    if case.query and "min_index" in case.query:
        try:
            if int(str(case.query["min_index"])) > 0:
                case.query["min_index"] = 0
        except ValueError:
            pass
    # A lock or campaign on a held lock waits up to `wait_ms` (30 s by default): at most 1 s.
    if op.path in ("/v1/locks/{name}", "/v1/elections/{name}/campaign") and op.method.lower() == "post" and isinstance(case.body, dict):
        wait = case.body.get("wait_ms")
        if wait is None or (isinstance(wait, int) and not isinstance(wait, bool) and wait > 1000):
            case.body["wait_ms"] = 1000
    # Never remove or re-add a live member of the cluster under test.
    if op.path == "/v1/cluster/members/{id}" and case.path_parameters:
        pid = str(case.path_parameters.get("id", ""))
        if pid.isdigit() and int(pid) in LIVE:
            case.path_parameters["id"] = str(1000 + int(pid))
    if op.path == "/v1/cluster/members" and op.method.lower() == "post" and isinstance(case.body, dict):
        bid = case.body.get("id")
        if isinstance(bid, int) and not isinstance(bid, bool) and bid in LIVE:
            case.body["id"] = 1000 + bid
