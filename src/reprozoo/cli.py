"""``reprozoo`` command line: ``list``, ``info NAME``, ``run NAME|all``.

Exit codes: 0 success; 1 a run failed (for ``run all``: at least one method failed), with a
one-line reason (``REPROZOO_DEBUG=1`` prints the traceback; "", "0", "false", "no", "off" mean off);
2 a usage error (unknown method, preset, data set or ``--set`` key, a bad seed, conflicting options,
an unusable ``--out``), with the valid choices, reported before anything runs or is written;
130 interrupted (Ctrl-C); 143 terminated (SIGTERM, e.g. ``timeout``), cleaned up like Ctrl-C.

A run is written to a hidden partial folder and moved to its place only when complete. Once it is
in place the run counts as complete: an interrupt that lands later (while the tables print) says so
and exits 0 (``run all`` stops there, exiting 130/143, with that method listed as ok).

``--out`` of ``run NAME`` must be a new folder, an empty one, or a previous run, which a complete
new run replaces whole. A previous run is a folder holding nothing but a ``result.json`` file in the
run schema (valid JSON with name, preset, records), optionally ``report.md`` and a ``figures/``
folder of image files; anything else is refused (pick a new folder or delete it). ``--out`` of
``run all`` must be a new or empty folder (the default, ``runs/<UTC time>-all``, always is).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reprozoo.core import registry
from reprozoo.core.experiment import ConfigError, check_seeds
from reprozoo.core.progress import set_quiet
from reprozoo.core.report import fmt_mean_std, primary_comparison, write_run, write_summary
from reprozoo.core.results import Result

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Ten recent ML papers as working software: run each method beside its baselines on real data.",
)
# Tables are wide: when the output is not a terminal (a log, CI), do not wrap them at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _usage_error(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code=2)


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run, raised in the main thread; handled like Ctrl-C but exits 143 (128 + 15)."""


def _interrupt_code(exc: BaseException) -> int:
    return 143 if isinstance(exc, Terminated) else 130


@contextlib.contextmanager
def _sigterm_raises():
    """While inside, SIGTERM raises :class:`Terminated` (once; a second SIGTERM during the clean-up is ignored)."""

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. embedded): leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_blocked():
    """Defer SIGINT/SIGTERM across the few renames that swap a finished run into place."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (AttributeError, ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


_RUN_ENTRIES = ("result.json", "report.md", "figures")  # all that write_run and the methods put in a run folder
_FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
_RESULT_KEYS = ("name", "preset", "records")


def _not_a_previous_run(path: Path) -> str | None:
    """Why the non-empty folder ``path`` is not a previous single-method run (None when it is).

    Conservative, as the folder is replaced whole: only ``result.json`` (a file holding valid JSON
    with the run schema's keys), ``report.md`` (a file) and ``figures/`` (a folder of image files)
    may be there, none of them a symlink.
    """
    entries = {p.name: p for p in path.iterdir()}
    extra = sorted(set(entries) - set(_RUN_ENTRIES))
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        return f"it holds {shown}, which a run does not write (a run holds only result.json, report.md, figures/)"
    rj = entries.get("result.json")
    if rj is None or rj.is_symlink() or not rj.is_file():
        return "it has no result.json file"
    try:
        data = json.loads(rj.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "its result.json is not valid JSON"
    if not isinstance(data, dict) or any(k not in data for k in _RESULT_KEYS) or not isinstance(
            data["records"], list):
        return f"its result.json lacks the run schema ({', '.join(_RESULT_KEYS)})"
    report = entries.get("report.md")
    if report is not None and (report.is_symlink() or not report.is_file()):
        return "its report.md is not a file"
    figures = entries.get("figures")
    if figures is not None:
        if figures.is_symlink() or not figures.is_dir():
            return "its figures is not a folder"
        for f in figures.iterdir():
            if f.is_symlink() or not f.is_file() or f.suffix.lower() not in _FIGURE_SUFFIXES:
                return f"its figures/ holds {f.name}, which is not an image file a run writes"
    return None


def _out_problem(out_dir: Path, previous_run_ok: bool = True) -> str | None:
    """Why ``out_dir`` cannot take a run (None when it can), checked before anything runs.

    Accepted: a path that does not exist and whose parent can be created; an empty folder; and,
    when ``previous_run_ok``, a previous run (see :func:`_not_a_previous_run`), which a complete new
    run replaces whole.
    """
    shown = f"--out {str(out_dir)!r}"
    try:
        path = Path(out_dir).expanduser().resolve()
        cwd = Path.cwd().resolve()
    except (OSError, RuntimeError) as exc:
        return f"{shown} cannot be resolved: {exc}"
    if path == Path(path.anchor):
        return f"{shown} is the filesystem root; give a folder for the run"
    if path == cwd or path in cwd.parents:
        return f"{shown} is the current folder or holds it; give a new folder for the run (it is replaced whole)"
    if path.exists():
        if not path.is_dir():
            return f"{shown} exists and is not a folder"
        try:
            nonempty = any(True for _ in path.iterdir())
            why = _not_a_previous_run(path) if nonempty and previous_run_ok else None
        except OSError as exc:
            return f"{shown} cannot be read: {exc}"
        if nonempty and not previous_run_ok:
            return (f"{shown} is not empty; run all writes into a new or empty folder only: "
                    "pick a new folder (or delete this one)")
        if why:
            return (f"{shown} is not a previous run: {why}; a run would replace it whole, so "
                    "pick a new folder (or delete this one)")
        parent = path.parent
    else:
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            return f"{shown} cannot be created: {str(parent)!r} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{shown} cannot be written: no write permission in {str(parent)!r}"
    return None


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
    for col in ("method", "field", "data sets", "presets", "primary metric"):
        table.add_column(col)
    for spec in registry.REGISTRY.values():
        table.add_row(spec.name, spec.field, ", ".join(spec.datasets), ", ".join(spec.presets), spec.primary_metric)
    console.print(table)


@app.command("info")
def info(name: Annotated[str, typer.Argument(help="method name, see `reprozoo list`")]) -> None:
    """Show a method's paper, data sets, presets and settings (the config fields and their quick values)."""
    try:
        spec = registry.get(name)
    except KeyError as exc:
        raise _usage_error(exc.args[0]) from None
    console.print(f"[bold]{spec.name}[/]: {spec.title}\npaper: {spec.paper}\nfield: {spec.field}")
    console.print(f"data sets: {', '.join(spec.datasets)}\npresets: {', '.join(spec.presets)}")
    extra = escape(f"\nextra: reprozoo[{spec.extra}]") if spec.extra else ""
    console.print(f"primary metric: {spec.primary_metric}{extra}")
    try:
        module = registry.load(name)
    except ModuleNotFoundError as exc:
        console.print(f"[yellow]{exc}[/]")
        return
    table = Table(title="settings (--set key=value)")
    table.add_column("key")
    for p in module.Config.PRESETS:
        table.add_column(p)
    cfgs = [module.Config.from_preset(p).to_dict() for p in module.Config.PRESETS]
    for key in cfgs[0]:
        table.add_row(key, *[", ".join(map(str, c[key])) if isinstance(c[key], list) else str(c[key]) for c in cfgs])
    console.print(table)


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise _usage_error(f"--set expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip()] = v
    return out


def _build_config(name: str, preset: str, datasets: list[str], seeds: list[int], sets: dict[str, str]):
    module = registry.load(name)
    cfg = module.Config.from_preset(preset)
    changes: dict = {}
    if datasets:
        changes["datasets"] = tuple(datasets)
    if seeds:
        changes["seeds"] = tuple(seeds)
    if changes:
        cfg = cfg.replace(**changes)
    if sets:
        cfg = cfg.with_strings(sets)
    return module, cfg


def _print_result(result: Result) -> None:
    summary = result.summary()
    blocks: dict = {}
    for (dataset, setting, method, role), stats in summary.items():
        blocks.setdefault((dataset, setting), []).append((method, role, stats))
    metrics = result.metrics()
    for (dataset, setting), rows in blocks.items():
        cols = [m for m in metrics if any(m in s for _, _, s in rows)]
        title = f"{result.name} | {dataset}" + ("" if setting == "default" else f" | {setting}")
        table = Table(title=title, title_justify="left")
        table.add_column("method")
        table.add_column("role")
        for c in cols:
            table.add_column(c, justify="right")
        for method, role, stats in rows:
            style = "bold green" if role == "method" else None
            table.add_row(method, role, *[fmt_mean_std(*stats[c]) if c in stats else "" for c in cols], style=style)
        console.print(table)


def _run_one(name: str, module, cfg, out_dir: Path, quiet: bool, written: dict | None = None) -> Result:
    """Run into a hidden sibling folder and move it to ``out_dir`` only when complete.

    An interrupted or failed run leaves no half-written run folder; an existing ``out_dir``
    is replaced only by a complete new run. ``written`` (a dict, if given) gets ``"result"``
    and ``"folder"`` the moment the run is in place (signals are blocked across the move), so that
    a caller catching a later interrupt (e.g. while the tables print) knows the run is complete.
    """
    problem = _out_problem(out_dir)
    if problem:
        raise ValueError(problem)
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
        t0 = time.perf_counter()
        result = module.run(cfg, partial)
        result.seconds = time.perf_counter() - t0
        write_run(result, partial)
        with _signals_blocked():
            if out_dir.exists():
                old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
                os.replace(out_dir, old)
                os.replace(partial, out_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(partial, out_dir)
            if written is not None:
                written.update(result=result, folder=out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    if not quiet:
        _print_result(result)
        console.print(f"[dim]{name}: {result.seconds:.1f} s, written to {out_dir}[/]")
    return result


def _timestamp() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="method name or 'all'")],
    preset: Annotated[str, typer.Option(help="quick (minutes, shipped data), full (paper settings), ...")] = "quick",
    dataset: Annotated[list[str] | None, typer.Option("--dataset", help="data set (repeatable)")] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="seed (repeatable)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a setting: key=value (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="run folder (default runs/<UTC time>-<name>)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars or tables")] = False,
) -> None:
    """Run a method's experiment (its method and baselines) and write result.json, report.md, figures/."""
    set_quiet(quiet)
    datasets = _dedupe(list(dataset or []), "--dataset")
    seeds = _dedupe(list(seed or []), "--seed")
    sets = _parse_sets(list(set_ or []))
    if name == "all":
        if datasets or sets:
            raise _usage_error("--dataset and --set apply to a single method; run them one by one")
        _run_all(preset, seeds, out, quiet)
        return
    for option, key, given in (("--dataset", "datasets", datasets), ("--seed", "seeds", seeds)):
        if key in sets:
            if given:
                raise _usage_error(f"both {option} and --set {key}= are given; use one of them")
            _dedupe([t.strip() for t in sets[key].split(",") if t.strip()], f"--set {key}=")
    try:
        registry.get(name)
        module, cfg = _build_config(name, preset, datasets, seeds, sets)
    except KeyError as exc:
        raise _usage_error(exc.args[0] + " (or 'all')") from None
    except ConfigError as exc:
        raise _usage_error(str(exc)) from None
    except ModuleNotFoundError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=1) from None
    out_dir = out if out is not None else Path("runs") / f"{_timestamp()}-{name}"
    problem = _out_problem(out_dir)
    if problem:
        raise _usage_error(problem)
    written: dict = {}
    try:
        with _sigterm_raises():
            _run_one(name, module, cfg, out_dir, quiet, written)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        if written:  # the run folder is in place: the run is complete, only the printing was cut short
            err.print(f"[yellow]{what} while printing:[/] {name} run complete and written to "
                      f"{escape(str(written['folder']))}")
            return
        err.print(f"[bold red]{what}:[/] {name} stopped; no new run folder was written at {escape(str(out_dir))}")
        raise typer.Exit(code=_interrupt_code(exc)) from None
    except ConfigError as exc:
        raise _usage_error(str(exc)) from None
    except Exception as exc:
        err.print(f"[bold red]error:[/] {name} failed: {type(exc).__name__}: {exc}")
        if _debug():
            err.print(traceback.format_exc())
        else:
            err.print("[dim](set REPROZOO_DEBUG=1 for the traceback)[/]")
        raise typer.Exit(code=1) from None


def _ok_entry(spec: registry.ExperimentSpec, written: dict) -> dict:
    result = written["result"]
    rows = primary_comparison(result, spec.primary_metric, spec.higher_is_better)
    return {"name": spec.name, "status": "ok", "seconds": result.seconds, "metric": spec.primary_metric,
            "rows": rows, "folder": str(written["folder"])}


def _run_all(preset: str, seeds: list[int], out: Path | None, quiet: bool) -> None:
    valid = list(dict.fromkeys(p for n in registry.names() for p in registry.get(n).presets))
    if preset not in valid:
        raise _usage_error(f"unknown preset {preset!r}; valid presets: {', '.join(valid)} "
                           "(run all runs each method that has the preset and skips the others)")
    if seeds:
        try:
            check_seeds(seeds)
        except ConfigError as exc:
            raise _usage_error(str(exc)) from None
    root = out if out is not None else Path("runs") / f"{_timestamp()}-all"
    problem = _out_problem(root, previous_run_ok=False)
    if problem:
        raise _usage_error(problem)
    root.mkdir(parents=True, exist_ok=True)
    summary = root / "summary.md"
    entries: list[dict] = []
    current: dict = {}  # the method running now (name, spec, t0, written); empty between methods
    done = False
    with _sigterm_raises():
        try:
            for name in registry.names():
                spec = registry.get(name)
                if preset not in spec.presets:
                    entries.append({"name": name, "status": "skipped", "error": f"no preset {preset!r}"})
                    write_summary(entries, summary)
                    continue
                current.update(name=name, spec=spec, t0=time.perf_counter(), written={})
                if not quiet:
                    console.rule(f"[bold]{name}[/] ({preset})")
                try:
                    module, cfg = _build_config(name, preset, [], seeds, {})
                    _run_one(name, module, cfg, root / name, quiet, current["written"])
                    entries.append(_ok_entry(spec, current["written"]))
                except Exception as exc:  # one failing method must not stop the others
                    msg = f"{type(exc).__name__}: {exc}"
                    entries.append({"name": name, "status": "failed", "seconds": time.perf_counter() - current["t0"],
                                    "error": msg, "folder": ""})
                    err.print(f"[bold red]{name} failed:[/] {escape(msg)}")
                    if _debug():
                        err.print(traceback.format_exc())
                current.clear()
                write_summary(entries, summary)
            write_summary(entries, summary)  # also when the registry is empty
            done = True
            if not quiet:
                console.rule("summary")
                console.print(summary.read_text())
        except KeyboardInterrupt as exc:
            what = "terminated" if isinstance(exc, Terminated) else "interrupted"
            if done:
                err.print(f"[yellow]{what} while printing:[/] run all complete; summary at {escape(str(summary))}")
            else:
                if current and not any(e["name"] == current["name"] for e in entries):
                    if current["written"]:  # its folder is in place: that method is complete
                        entries.append(_ok_entry(current["spec"], current["written"]))
                    else:
                        entries.append({"name": current["name"], "status": what,
                                        "seconds": time.perf_counter() - current["t0"]})
                if not current:
                    where = "between methods"
                elif current["written"]:
                    where = f"after {current['name']} was complete and written"
                else:
                    where = f"during {current['name']}"
                write_summary(entries, summary)
                err.print(f"[bold red]{what}[/] {where}; the methods after it did not run; summary of what "
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
