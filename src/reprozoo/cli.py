"""``reprozoo`` command line: ``list``, ``info NAME``, ``run NAME|all``: a thin layer over :func:`reprozoo.run`.

Exit codes: 0 success; 1 a run failed (for ``run all``: at least one method failed), with a
one-line reason (``REPROZOO_DEBUG=1`` prints the traceback; "", "0", "false", "no", "off" mean off);
2 a usage error (unknown method, preset, data set or ``--set`` key, a bad seed, device or thread count,
conflicting options, an unusable ``--out``), with the valid choices, reported before anything runs or is
written; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM, e.g. ``timeout``), cleaned up like Ctrl-C.

The run folder rules (``--out``, the atomic swap, signals) are those of :mod:`reprozoo.core.run`. A run is
complete once its folder is in place: an interrupt that lands later (while the tables print) says so and
exits 0 (``run all`` stops there, exiting 130/143, with that method listed as ok).
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reprozoo.core import registry
from reprozoo.core.checks import ConfigError
from reprozoo.core.progress import set_quiet
from reprozoo.core.report import table_blocks
from reprozoo.core.results import Result
from reprozoo.core.run import Terminated, default_out, sigterm_raises
from reprozoo.core.run import run as run_method
from reprozoo.core.run import run_all as run_every_method

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Recent ML papers as working software: run each method beside its baselines on real data "
    "(`reprozoo list` shows the methods).",
)
# Tables are wide: when the output is not a terminal (a log, CI), do not wrap them at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _usage_error(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code=2)


def _interrupt_code(exc: BaseException) -> int:
    return 143 if isinstance(exc, Terminated) else 130


def _debug() -> bool:
    """``REPROZOO_DEBUG`` is on (anything but unset, "", "0", "false", "no", "off")."""
    return os.environ.get("REPROZOO_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def _dedupe(values: list, option: str) -> list:
    """``values`` with repeats dropped (first kept), warning on stderr for each repeat."""
    out = list(dict.fromkeys(values))
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        err.print(f"[yellow]warning:[/] {escape(option)} {escape(', '.join(repeated))} given more than once; "
                  "each runs once")
    return out


@app.command("list")
def list_methods() -> None:
    """List the methods, their data sets and presets."""
    table = Table(title="reprozoo methods")
    for col in ("method", "field", "data sets", "presets", "primary metric", "--device"):
        table.add_column(col)
    for name in registry.names():
        try:
            spec = registry.get(name)
        except Exception as exc:  # a missing extra: still listed, with how to install it
            table.add_row(name, "", escape(str(exc)), "", "", "")
            continue
        table.add_row(spec.name, spec.field, ", ".join(spec.datasets) or "(paths)", ", ".join(spec.presets),
                      spec.primary_metric, "yes" if spec.uses_torch else "no (CPU)")
    console.print(table)


@app.command("info")
def info(name: Annotated[str, typer.Argument(help="method name, see `reprozoo list`")]) -> None:
    """Show a method's paper, data sets, presets and settings (the config fields and their preset values)."""
    try:
        spec = registry.get(name)
    except KeyError as exc:
        raise _usage_error(exc.args[0]) from None
    except ModuleNotFoundError as exc:
        err.print(f"[yellow]{escape(str(exc))}[/]")
        raise typer.Exit(code=1) from None
    console.print(f"[bold]{spec.name}[/]: {spec.title}\npaper: {spec.paper}\nfield: {spec.field}")
    console.print(f"data sets: {', '.join(spec.datasets)}\npresets: {', '.join(spec.presets)}")
    extra = escape(f"\nextra: reprozoo[{spec.extra}]") if spec.extra else ""
    console.print(f"primary metric: {spec.primary_metric}{extra}\nthreads: {spec.threads} (--threads)")
    table = Table(title="settings (--set key=value)")
    table.add_column("key")
    for p in spec.presets:
        table.add_column(p)
    cfgs = [spec.config.from_preset(p).to_dict() for p in spec.presets]
    for key in cfgs[0]:
        table.add_row(key, *[", ".join(map(str, c[key])) if isinstance(c[key], list) else str(c[key]) for c in cfgs])
    console.print(table)


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise _usage_error(f"--set expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        k = k.strip()
        if k in out and out[k] != v:
            err.print(f"[yellow]warning:[/] --set {escape(k)}= given more than once ({escape(repr(out[k]))}, "
                      f"{escape(repr(v))}); the last one is used")
        out[k] = v
    return out


def _print_result(result: Result) -> None:
    for block in table_blocks(result):
        table = Table(title=f"{result.name} | {block.title}", title_justify="left")
        table.add_column("method")
        table.add_column("role")
        for h in block.headers:
            table.add_column(h, justify="right")
        for method, role, cells in block.rows:
            table.add_row(method, role, *cells, style="bold green" if role == "method" else None)
        console.print(table)


def _fail(name: str, exc: BaseException) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(name)} failed: {escape(type(exc).__name__)}: {escape(str(exc))}")
    if _debug():
        err.print(escape(traceback.format_exc()))
    else:
        err.print("[dim](set REPROZOO_DEBUG=1 for the traceback)[/]")
    return typer.Exit(code=1)


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="method name or 'all'")],
    preset: Annotated[str, typer.Option(help="quick (minutes, shipped data), full (paper settings), ...")] = "quick",
    dataset: Annotated[list[str] | None, typer.Option("--dataset", help="data set or file (repeatable)")] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="seed (repeatable)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a setting: key=value (repeatable)")] = None,
    device: Annotated[str | None, typer.Option(help="auto|cpu|cuda|cuda:N, for methods whose work is torch")] = None,
    threads: Annotated[int | None, typer.Option(help="torch/BLAS threads (default: the method's own)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="run folder (default runs/<UTC time>-<name>)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars or tables")] = False,
    jobs: Annotated[int, typer.Option(help="run all: methods run at once, each in its own process")] = 1,
) -> None:
    """Run a method's experiment (its method and baselines) and write result.json, report.md, figures/."""
    set_quiet(quiet)
    datasets = _dedupe(list(dataset or []), "--dataset")
    seeds = _dedupe(list(seed or []), "--seed")
    sets = _parse_sets(list(set_ or []))
    if name == "all":
        if datasets or sets:
            raise _usage_error("--dataset and --set apply to a single method; run them one by one")
        _run_all(preset, seeds, out, device, threads, quiet, jobs)
        return
    if jobs != 1:
        raise _usage_error("--jobs applies to run all (methods run at once); a single method runs in one process")
    for option, key, given in (("--dataset", "datasets", datasets), ("--seed", "seeds", seeds),
                               ("--device", "device", [device] if device else [])):
        if key in sets:
            if given:
                raise _usage_error(f"both {option} and --set {key}= are given; use one of them")
            if key != "device":
                _dedupe([t.strip() for t in sets[key].split(",") if t.strip()], f"--set {key}=")
    written: dict = {}
    out_dir = out if out is not None else default_out(name)
    try:
        with sigterm_raises():  # also while the tables print, after the run (which has its own)
            result = run_method(name, preset, out_dir, datasets=datasets, seeds=seeds, overrides=sets,
                                device=device, threads=threads,
                                on_written=lambda r, f: written.update(result=r, folder=f))
            if not quiet:
                _print_result(result)
                console.print(f"[dim]{name}: {result.seconds:.1f} s, written to {written['folder']}[/]")
    except KeyError as exc:
        raise _usage_error(exc.args[0] + " (or 'all')") from None
    except ConfigError as exc:
        raise _usage_error(str(exc)) from None
    except ModuleNotFoundError as exc:
        if written:
            raise _fail(name, exc) from None
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        if written:  # the run folder is in place: the run is complete, only the printing was cut short
            err.print(f"[yellow]{what} while printing:[/] {name} run complete and written to "
                      f"{escape(str(written['folder']))}")
            return
        err.print(f"[bold red]{what}:[/] {name} stopped; no new run folder was written at {escape(str(out_dir))}")
        raise typer.Exit(code=_interrupt_code(exc)) from None
    except Exception as exc:
        raise _fail(name, exc) from None


def _run_all(preset: str, seeds: list[int], out: Path | None, device: str | None, threads: int | None,
             quiet: bool, jobs: int) -> None:
    def on_start(name: str) -> None:
        if not quiet and jobs == 1:
            console.rule(f"[bold]{name}[/] ({preset})")
        elif not quiet:
            console.print(f"[bold]{name}[/] ({preset}) started")

    def on_done(entry: dict) -> None:
        if entry["status"] == "failed":
            err.print(f"[bold red]{entry['name']} failed:[/] {escape(entry['error'])}")
        elif entry["status"] == "ok" and not quiet:
            if jobs > 1:  # finished out of order: say which method the tables are of
                console.rule(f"[bold]{entry['name']}[/] ({preset}) done in {entry['seconds']:.0f} s")
            _print_result(Result.load(Path(entry["folder"]) / "result.json"))

    root = out if out is not None else default_out("all")
    entries: list[dict] = []
    try:
        with sigterm_raises():
            entries = run_every_method(preset, root, seeds=seeds, device=device, threads=threads, quiet=quiet,
                                       on_start=on_start, on_done=on_done, jobs=jobs)
            if not quiet:
                console.rule("summary")
                console.print((Path(root) / "summary.md").read_text())
    except ConfigError as exc:
        raise _usage_error(str(exc)) from None
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        summary = getattr(exc, "summary", Path(root) / "summary.md")
        if not hasattr(exc, "where"):  # after run_all returned: everything was written
            err.print(f"[yellow]{what} while printing:[/] run all complete; summary at {escape(str(summary))}")
        else:
            err.print(f"[bold red]{what}[/] {exc.where}; the methods after it did not run; summary of what "
                      f"finished: {escape(str(summary))}")
            raise typer.Exit(code=_interrupt_code(exc)) from None
    failed = [e["name"] for e in entries if e["status"] == "failed"]
    if failed:
        err.print(f"[bold red]{len(failed)} method(s) failed:[/] {', '.join(failed)}")
        raise typer.Exit(code=1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
