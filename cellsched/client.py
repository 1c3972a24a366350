"""The command-line client: `cellsched submit FILE`, `jobs`, `job ID`, `explain ID`, `cancel ID`,
`machines`, `drain MACHINE`, each with --json. It talks to the API over HTTP (httpx);
job files (YAML or JSON) are checked first by the API's own Pydantic models, so a
mistake is named (file, field) before anything is sent.

Where: --api URL or CELLSCHED_API (default http://127.0.0.1:8080). Token: --token,
CELLSCHED_TOKEN, or the file `cellsched api` writes for its first try.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cellsched.arg_types import int_at_least
from cellsched.cellstate.errors import CellError

DEFAULT_API = "http://127.0.0.1:8080"


class ClientError(CellError):
    """A bad job file, an unreachable API, or the API's error answer (drawn in cellstate/errors.py's tree)."""


# Far above any job file the API would take (its body limit is a few MiB), far below what
# would stall the client.
MAX_FILE_VALUES = 1_000_000


def within_values(obj: Any, limit: int) -> bool:
    """Whether obj, walked as JSON would write it (a shared node once per reference), holds
    at most `limit` values; the walk stops as soon as it is over."""
    seen, stack = 0, [obj]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            return False
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def load_job_file(path: str) -> tuple[str, dict[str, Any]]:
    """('one', body) or ('bulk', body) from a YAML or JSON file, validated by the API's models."""
    import yaml
    from pydantic import ValidationError

    from cellsched.api import BulkIn, JobIn

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ClientError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ClientError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    try:
        obj = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ClientError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {exc}") from None
    if not within_values(obj, MAX_FILE_VALUES):
        # YAML aliases repeat a node without its text: a few lines can stand for billions of
        # values ("billion laughs"), which validating or sending would expand.
        raise ClientError(f"{path}: holds more than {MAX_FILE_VALUES:,} values once its YAML aliases are expanded")
    if isinstance(obj, list):
        obj = {"jobs": obj}
    if not isinstance(obj, dict):
        raise ClientError(f"{path}: expected a job (a mapping) or a list of jobs")
    kind, model = ("bulk", BulkIn) if "jobs" in obj else ("one", JobIn)
    try:
        model.model_validate(obj)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()]
        raise ClientError("\n".join(lines)) from None
    # The file as written goes to the API, not the validated model's dump: that is in base
    # units, and a bare number means cores (cpu) or MiB (memory) to the API.
    return kind, obj


def _token(args: argparse.Namespace) -> str | None:
    if args.token:
        return args.token
    if os.environ.get("CELLSCHED_TOKEN"):
        return os.environ["CELLSCHED_TOKEN"]
    from cellsched.api_server import DEFAULT_TOKEN_FILE

    return DEFAULT_TOKEN_FILE.read_text().strip() if DEFAULT_TOKEN_FILE.exists() else None


def call(args: argparse.Namespace, method: str, path: str, body: Any = None, params: dict | None = None,
         headers: dict | None = None) -> Any:
    import httpx

    base = args.api or os.environ.get("CELLSCHED_API") or DEFAULT_API
    hdrs = dict(headers or {})
    token = _token(args)
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    try:
        r = httpx.request(method, base.rstrip("/") + path, json=body, params=params, headers=hdrs, timeout=30)
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the API at {base}: {exc}") from None
    try:
        data = r.json()
    except ValueError:
        data = {"detail": r.text}
    if r.status_code >= 400:
        detail = data.get("detail", "") if isinstance(data, dict) else data
        raise ClientError(f"HTTP {r.status_code}: {detail}")
    return data


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)


def _job_line(j: dict) -> str:
    t = j["tasks"]
    return f"{j['id']:<36} {j['class']:<8} p{j['priority']:<3} {j['status']:<10} {t['bound']}/{t['total']} bound" \
           f"{'  ' + j['reason'] if j['reason'] else ''}"


def cmd_submit(args: argparse.Namespace) -> int:
    kind, body = load_job_file(args.file)
    if kind == "one":
        headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
        j = call(args, "POST", "/v1/jobs", body, headers=headers)
        _print(args, j, f"submitted {j['id']} ({j['status']})")
    else:
        out = call(args, "POST", "/v1/jobs/bulk", body)
        lines = [f"{r['id']}: {'submitted' if r['created'] else 'refused: ' + r['reason']}" for r in out["results"]]
        _print(args, out, "\n".join(lines + [f"{out['created']} submitted, {out['refused']} refused"]))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("class", args.job_class), ("status", args.status), ("priority", args.priority),
                                ("limit", args.limit), ("cursor", args.cursor)) if v is not None}
    out = call(args, "GET", "/v1/jobs", params=params)
    more = f"\nmore: --cursor {out['next_cursor']}" if out["next_cursor"] else ""
    _print(args, out, "\n".join(_job_line(j) for j in out["items"]) + more)
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    j = call(args, "GET", f"/v1/jobs/{args.id}")
    _print(args, j, _job_line(j) + "".join(f"\n  {t} -> {m}" for t, m in sorted((j.get("bindings") or {}).items())))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    e = call(args, "GET", f"/v1/jobs/{args.id}/explanation")
    lines = [f"{e['id']}: {e['status']}" + (f": {e['reason']}" if e["reason"] else "")]
    for g in e["unplaceable_groups"]:
        lines.append(f"  group {g['group']}: {g['tasks_unplaced']} unplaced ({g['reason']}"
                     f"{' ' + g['resource'] if g.get('resource') else ''}), {g['machines_evaluated']} machines "
                     f"evaluated, rejected: {g['rejected']}")
    lines.append("  not recorded: " + "; ".join(e["not_recorded"]))
    _print(args, e, "\n".join(lines))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    c = call(args, "POST", f"/v1/jobs/{args.id}/cancel")
    _print(args, c, f"{c['id']}: cancelled" + (" (already)" if c["already_cancelled"] else "")
           + f", {c['released_tasks']} tasks released")
    return 0


def cmd_machines(args: argparse.Namespace) -> int:
    out = call(args, "GET", "/v1/machines", params={"limit": args.limit})
    lines = [f"{m['id']:<24} {m['state']:<9} {m['tasks']:>4} tasks  cpu {m['used']['human']['cpu']}/"
             f"{m['capacity']['human']['cpu']}  mem {m['used']['human']['memory']}/{m['capacity']['human']['memory']}"
             for m in out["items"]]
    _print(args, out, "\n".join(lines))
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    out = call(args, "POST", f"/v1/machines/{args.machine}/drain")
    _print(args, out, f"{out['id']}: {out['state']}")
    return 0


def add_commands(sub) -> None:
    def common(p: argparse.ArgumentParser, fn) -> None:
        p.add_argument("--api", default=None, help=f"the API's URL (default: CELLSCHED_API or {DEFAULT_API})")
        p.add_argument("--token", default=None, help="bearer token (default: CELLSCHED_TOKEN or the local token)")
        p.add_argument("--json", action="store_true", help="print the API's JSON answer")
        p.set_defaults(fn=lambda a: _run(fn, a))

    p = sub.add_parser("submit", help="submit a job file (YAML or JSON; a list or {jobs: [...]} goes in bulk)")
    p.add_argument("file")
    p.add_argument("--idempotency-key", default=None)
    common(p, cmd_submit)
    p = sub.add_parser("jobs", help="list jobs")
    p.add_argument("--class", dest="job_class", default=None)
    p.add_argument("--status", default=None)
    p.add_argument("--priority", type=int, default=None)
    p.add_argument("--limit", type=int_at_least(1), default=None)
    p.add_argument("--cursor", default=None)
    common(p, cmd_jobs)
    for name, fn, what in (("job", cmd_job, "show a job"), ("explain", cmd_explain, "why a job is where it is"),
                           ("cancel", cmd_cancel, "cancel a job")):
        p = sub.add_parser(name, help=what)
        p.add_argument("id")
        common(p, fn)
    p = sub.add_parser("machines", help="list machines")
    p.add_argument("--limit", type=int_at_least(1), default=500)
    common(p, cmd_machines)
    p = sub.add_parser("drain", help="drain a machine (no new tasks; its tasks are rescheduled)")
    p.add_argument("machine")
    common(p, cmd_drain)


def _run(fn, args: argparse.Namespace) -> int:
    try:
        return fn(args)
    except ClientError as exc:
        print(f"cellsched {args.command}: {exc}", file=sys.stderr)
        return 1 if str(exc).startswith("HTTP") else 2
