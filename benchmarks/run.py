"""Measure runsense against SPEC §8's targets on SQLite and PostgreSQL, and print one table.

    python benchmarks/run.py                       # full sizes, both backends
    python benchmarks/run.py --quick               # reduced sizes, for CI (about 90 s)
    python benchmarks/run.py --backend sqlite      # one backend only
    python benchmarks/run.py --json results.json   # also keep the numbers
    python benchmarks/run.py --markdown table.md   # the table in Markdown, for the README

Every fixture (projects, homes, databases) lives in a temp dir and every process runs with
RUNSENSE_HOME set: the user's real data is never touched, and a RUNSENSE_DATABASE_URL in the
caller's environment is ignored. PostgreSQL is one throwaway local server (tests/pg_server.py)
with a fresh database per workload, stopped at the end, also on Ctrl-C. Big databases are built
outside the timed part. runsense's bytecode is written first, as `pip install` does, so commands
start as a user's would. Numbers are printed, never asserted; other work on the machine shows in
the load averages printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (
    BACKENDS,
    Bench,
    PostgresHost,
    Result,
    compile_bytecode,
    fsync_ms,
    postgres_missing,
)
from benchmarks.workloads_basic import (
    bench_failure_backlog,
    bench_help,
    bench_idle_tick,
    bench_in_process,
    bench_run_shell,
    bench_seed_backlog,
)
from benchmarks.workloads_daemon import (
    bench_daemon_idle,
    bench_reaction_latency,
    bench_three_daemon_drain,
)
from benchmarks.workloads_listings import bench_runs_list, bench_sensor_list
from benchmarks.workloads_runs import bench_requested_run_latency, bench_run_throughput
from benchmarks.workloads_scoped import bench_scoped_idle
from benchmarks.workloads_tick import bench_tick_rate

NO_DATABASE = ("-",)
Workload = Callable[[Bench, str], list[Result]]

# In table order; each runs once per backend it lists (and that was asked for).
WORKLOADS: list[tuple[Workload, tuple[str, ...]]] = [
    (bench_help, NO_DATABASE),
    (bench_run_shell, NO_DATABASE),
    (bench_in_process, BACKENDS),
    (bench_seed_backlog, BACKENDS),
    (bench_failure_backlog, BACKENDS),
    (bench_idle_tick, BACKENDS),
    (bench_tick_rate, BACKENDS),
    (bench_sensor_list, BACKENDS),
    (bench_runs_list, BACKENDS),
    (bench_reaction_latency, BACKENDS),
    (bench_requested_run_latency, BACKENDS),
    (bench_run_throughput, BACKENDS),
    (bench_daemon_idle, BACKENDS),
    (bench_scoped_idle, BACKENDS),
    (bench_three_daemon_drain, ("postgres",)),
]


def number(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def cells(r: Result) -> list[str]:
    """workload, backend, size, result, target, met: the table's columns for one row."""
    sign = "≤" if r.better == "lower" else "≥"
    met = "yes" if r.met else "no"
    return [
        r.workload,
        r.backend,
        r.size,
        f"{r.statistic} {number(r.value)} {r.unit}",
        f"{sign} {number(r.target)} {r.unit} ({r.spec})",
        f"({met})" if r.role == "info" else met,
    ]


COLUMNS = ["workload", "db", "size", "result", "target (§8 round)", "met"]


def markdown(results: list[Result]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in results:
        row = cells(r)
        row[0] = row[0].replace("  ↳", "↳").replace("  …", "…")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines) + "\n"


def fsync_text(probe: dict[str, float]) -> str:
    return f"{probe['p50']:.2g} ms (p95 {probe['p95']:.2g} ms)"


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: daemons stopped, server removed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="reduced sizes and repeats, for CI")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="the table in Markdown")
    parser.add_argument(
        "--pg-fsync",
        choices=["on", "off"],
        default="on",
        help="PostgreSQL's fsync: on (its default) or off (as the tests run it, to separate"
        " runsense's own cost from the disk's)",
    )
    parser.add_argument(
        "--only",
        metavar="TEXT",
        action="append",
        help="run only the workloads whose function name contains TEXT (repeatable)",
    )
    parser.add_argument(
        "--drain-wait",
        type=float,
        metavar="SECONDS",
        help="how long the three-daemon drain waits for its requested runs before extrapolating"
        " the time for all of them from their rate (default 120, --quick 10; inf: wait for all)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)

    from rich.console import Console
    from rich.table import Table

    import runsense_cli

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    os.environ.pop("RUNSENSE_DATABASE_URL", None)  # SQLite rows must never go elsewhere
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    postgres: PostgresHost | None = None
    if "postgres" in backends:
        reason = postgres_missing()
        if reason is None:
            try:
                postgres = PostgresHost(fsync=args.pg_fsync == "on")
            except Exception as exc:
                reason = str(exc).strip().splitlines()[0]
        if postgres is None:
            console.print(f"[yellow]PostgreSQL skipped, SQLite only: {reason}[/yellow]")
            backends = ["sqlite"]
    environment: dict[str, Any] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": postgres.version if postgres else None,
        "backends": backends,
        "runsense": runsense_cli.__version__,
        "platform": platform.platform(terse=True),
        "mode": "quick" if args.quick else "full",
        "bytecode_compiled_first": compile_bytecode(),
        "load_before": load(),
        "fsync_ms_before": fsync_ms(Path(tempfile.gettempdir())),
    }
    console.print(
        f"[bold]runsense benchmarks[/bold] · {environment['cores']} cores · Python"
        f" {environment['python']} · SQLite {environment['sqlite']}"
        + (f" · {postgres.description}" if postgres else "")
        + f" · {environment['mode']} mode · load average {environment['load_before']}"
        + f" · disk fsync {fsync_text(environment['fsync_ms_before'])}"
    )
    results: list[Result] = []
    errors: list[str] = []
    timings: list[dict[str, Any]] = []  # per workload: seconds, and the load and disk before it
    started = time.monotonic()
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="runsense-bench-") as tmp:
        # Anything that forgets its own home still lands in the temp dir, never the real one.
        os.environ["RUNSENSE_HOME"] = str(Path(tmp) / "default-home")
        bench = Bench(Path(tmp), args.quick, postgres, args.drain_wait)
        try:
            for workload, kinds in WORKLOADS:
                if args.only and not any(text in workload.__name__ for text in args.only):
                    continue
                for backend in kinds:
                    if backend != "-" and backend not in backends:
                        continue
                    name = workload.__name__ + ("" if backend == "-" else f" on {backend}")
                    console.print(f"[dim]running {name}…[/dim]", end="")
                    began = time.monotonic()
                    conditions = {
                        "workload": name,
                        "load_1min": os.getloadavg()[0],
                        "fsync_ms": fsync_ms(Path(tmp), 10)["p50"],
                    }
                    try:
                        results += workload(bench, backend)
                    except Exception:
                        errors.append(f"{name}: {traceback.format_exc()}")
                        console.print(f"[red]{name} failed[/red]\n{traceback.format_exc()}")
                    finally:
                        bench.release()
                    conditions["seconds"] = round(time.monotonic() - began, 1)
                    timings.append(conditions)
                    console.print(
                        f"[dim] {conditions['seconds']:.1f} s (load {conditions['load_1min']:.1f},"
                        f" fsync {conditions['fsync_ms']:.2g} ms before)[/dim]"
                    )
        except KeyboardInterrupt:
            interrupted = True
            console.print("\n[yellow]interrupted: stopping what was started[/yellow]")
        finally:
            bench.release()
            if postgres is not None:
                postgres.cleanup()
    environment["load_after"] = load()
    environment["fsync_ms_after"] = fsync_ms(Path(tempfile.gettempdir()))
    environment["seconds"] = round(time.monotonic() - started, 1)
    for note in bench.notes:
        console.print(f"[dim]{note}[/dim]")

    table = Table(
        title=f"runsense {environment['runsense']} · {environment['cores']} cores · Python "
        f"{environment['python']} · SQLite {environment['sqlite']}"
        + (f" · PostgreSQL {environment['postgres']}" if postgres else "")
        + f" · {environment['mode']} mode",
        header_style="bold",
    )
    for column in COLUMNS:
        table.add_column(column)
    for r in results:
        row = cells(r)
        colour = "green" if r.met else "red"
        row[-1] = (
            row[-1]
            .replace("yes", f"[{colour}]yes[/{colour}]")
            .replace("no", f"[{colour}]no[/{colour}]")
        )
        table.add_row(*row)
    console.print(table)
    targets = [r for r in results if r.role == "target"]
    console.print(
        f"{sum(r.met for r in targets)} of {len(targets)} targets met (rows marked ↳ are"
        f" supporting measurements; r1/r2: SPEC §8 round 1 / round 2) · {environment['seconds']:.0f} s"
        f" · load average before {environment['load_before']}, after {environment['load_after']}"
        f" · disk fsync after {fsync_text(environment['fsync_ms_after'])}"
    )
    if args.json:
        document = {
            "environment": environment,
            "results": [{**asdict(r), "met": r.met} for r in results],
            "notes": bench.notes,
            "timings": timings,
            "errors": errors,
        }
        args.json.write_text(json.dumps(document, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(results))
    if interrupted:
        return 130
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
