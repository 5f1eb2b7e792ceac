"""The one way a run folder is made: :func:`run` (one method) and :func:`run_all` (every method).

A library user gets the same folder as the CLI::

    import reprozoo
    result = reprozoo.run(name, preset="smoke", out="runs/x", seeds=[0, 1], overrides={"setting": value})

A run is written to a hidden partial folder beside ``out`` and moved into place only when complete, so an
interrupted or failed run never leaves a half-written folder and a previous run at ``out`` stays intact.
``out`` must be a new folder, an empty one, or a previous run (a folder holding nothing but a
``result.json`` in the run schema, optionally ``report.md`` and a ``figures/`` folder of images), which a
complete new run replaces whole; anything else is refused before the run starts. While a run is in progress
in the main thread, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``), so ``timeout`` and job
schedulers clean up like Ctrl-C.

Errors: :class:`~reprozoo.core.checks.ConfigError` (a usage error: unknown preset, data set or setting, a
bad seed, device or ``out``) before anything runs or is written; ``KeyError`` for an unknown method;
whatever the method raises, after which nothing is written.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from reprozoo import __version__
from reprozoo.core import registry
from reprozoo.core.checks import ConfigError
from reprozoo.core.experiment import check_seeds
from reprozoo.core.report import primary_comparison, write_run, write_summary
from reprozoo.core.results import Result, environment, git_commit, utc_now
from reprozoo.core.threads import resolve_threads, thread_limits

__all__ = ["run", "run_all", "build_config", "check_out", "Terminated", "sigterm_raises"]


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run, raised in the main thread; handled like Ctrl-C (the CLI exits 143 = 128 + 15)."""


@contextlib.contextmanager
def _first_signal_raises(signals: tuple[int, ...]) -> Iterator[None]:
    """While inside, the first of ``signals`` raises (SIGTERM :class:`Terminated`, SIGINT ``KeyboardInterrupt``)
    and all of ``signals`` are ignored from then on, so a second one cannot cut the clean-up short. Outside the
    main thread (an embedding application) signals are left alone."""

    def handler(signum, frame):
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, handler) for sig in signals}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def sigterm_raises() -> contextlib.AbstractContextManager[None]:
    """While inside, SIGTERM raises :class:`Terminated` (once; a second SIGTERM during the clean-up is
    ignored). Outside the main thread (an embedding application) SIGTERM is left alone."""
    return _first_signal_raises((signal.SIGTERM,))


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
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


# -- the run folder -------------------------------------------------------------------------------
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


def check_out(out: str | Path, *, previous_run_ok: bool = True) -> Path:
    """Resolve ``out`` and raise :class:`ConfigError` (naming ``--out``/``out``) if it cannot take a run.

    Accepted: a path that does not exist and whose parent can be created; an empty folder; and, when
    ``previous_run_ok``, a previous run, which a complete new run replaces whole.
    """
    shown = f"--out {str(out)!r}"
    try:
        path = Path(out).expanduser().resolve()
        cwd = Path.cwd().resolve()
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"{shown} cannot be resolved: {exc}") from None
    if path == Path(path.anchor):
        raise ConfigError(f"{shown} is the filesystem root; give a folder for the run")
    if path == cwd or path in cwd.parents:
        raise ConfigError(f"{shown} is the current folder or holds it; give a new folder for the run "
                          "(it is replaced whole)")
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{shown} exists and is not a folder")
        try:
            nonempty = any(True for _ in path.iterdir())
            why = _not_a_previous_run(path) if nonempty and previous_run_ok else None
        except OSError as exc:
            raise ConfigError(f"{shown} cannot be read: {exc}") from None
        if nonempty and not previous_run_ok:
            raise ConfigError(f"{shown} is not empty; run all writes into a new or empty folder only: "
                              "pick a new folder (or delete this one)")
        if why:
            raise ConfigError(f"{shown} is not a previous run: {why}; a run would replace it whole, so "
                              "pick a new folder (or delete this one)")
        parent = path.parent
    else:
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(f"{shown} cannot be created: {str(parent)!r} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{shown} cannot be written: no write permission in {str(parent)!r}")
    try:  # permissions do not tell everything (root, read-only or virtual file systems such as /proc)
        os.rmdir(tempfile.mkdtemp(prefix=".reprozoo-probe-", dir=parent))
    except OSError as exc:
        raise ConfigError(f"{shown} cannot be written: a folder cannot be created in {str(parent)!r} "
                          f"({exc.strerror or exc})") from None
    return path


def default_out(name: str) -> Path:
    """``runs/<UTC time>-<name>``."""
    return Path("runs") / f"{utc_now().replace('-', '').replace(':', '')}-{name}"


# -- building a config ----------------------------------------------------------------------------
def build_config(
    name: str,
    preset: str = "quick",
    *,
    datasets: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
):
    """``(spec, config)``: the preset's config with data sets, seeds, ``overrides`` (field: value, or
    field: string as ``--set`` gives it) and ``device`` applied and validated (:class:`ConfigError`)."""
    spec = registry.get(name)
    cfg = spec.config.from_preset(preset)
    changes: dict[str, Any] = {}
    if datasets:
        changes["datasets"] = (datasets,) if isinstance(datasets, (str, Path)) else tuple(datasets)
    if seeds:
        changes["seeds"] = _seed_tuple(seeds)
    if device is not None:
        if not spec.uses_torch:
            raise ConfigError(f"{name} has no device setting: it runs NumPy/SciPy on the CPU (leave --device out)")
        changes["device"] = device
    overrides = dict(overrides or {})
    for key in ("datasets", "seeds", "device"):
        if key in overrides and key in changes:
            raise ConfigError(f"{key} is given twice (as an argument and in overrides); use one of them")
    strings = {k: v for k, v in overrides.items() if isinstance(v, str) and not isinstance(getattr(cfg, k, None), str)}
    values = {k: v for k, v in overrides.items() if k not in strings}
    if "preset" in values:
        raise ConfigError("preset cannot be changed with an override; use preset=/--preset")
    # one replace, so cross-field checks see typed values, strings and arguments applied together
    changes.update(values)
    changes.update(cfg.parse_strings(strings))
    return spec, cfg.replace(**changes) if changes else cfg


def _seed_tuple(seeds: Any) -> tuple:
    """``seeds`` as a tuple, a single int (NumPy ints included) read as one seed; the values are checked later."""
    import operator

    if isinstance(seeds, (int, str)) or not hasattr(seeds, "__iter__"):
        seeds = (seeds,)

    def as_int(s):
        try:
            return s if isinstance(s, bool) else operator.index(s)  # NumPy integers are ints here
        except TypeError:
            return s

    return tuple(as_int(s) for s in seeds)


# -- one run --------------------------------------------------------------------------------------
def run(
    name: str,
    preset: str = "quick",
    out: str | Path | None = None,
    *,
    datasets: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
    threads: int | None = None,
    quiet: bool | None = None,
    on_written: Callable[[Result, Path], None] | None = None,
) -> Result:
    """Run method ``name`` (its method and baselines) and write ``out/{result.json,report.md,figures/}``.

    ``overrides``: ``{setting: value}`` (``reprozoo info NAME`` lists them; a string is parsed as
    ``--set`` does); ``device``: ``auto|cpu|cuda[:N]`` for a method whose work is torch (resolved before the
    run; the device used is recorded); ``threads``: torch/BLAS threads (default: the method's own choice);
    ``quiet``: silence progress bars (None leaves the current setting); ``out`` defaults to
    ``runs/<UTC time>-<name>``. ``on_written(result, folder)`` is called the moment the folder is in place.
    Returns the :class:`Result`, also readable later with ``Result.load(out / "result.json")``.
    """
    from reprozoo.core.progress import set_quiet

    spec, cfg = build_config(name, preset, datasets=datasets, seeds=seeds, overrides=overrides, device=device)
    try:
        n_threads = resolve_threads(threads, spec.threads)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    out_dir = check_out(out if out is not None else default_out(name))
    if quiet is not None:
        set_quiet(quiet)
    used = "cpu"
    if spec.uses_torch:
        from reprozoo.core.device import describe_device, resolve_device

        dev = resolve_device(cfg.device)
        cfg = cfg.replace(device=str(dev))
        used = describe_device(dev)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    with sigterm_raises():
        try:
            partial.mkdir()
            t0, c0 = time.perf_counter(), _cpu_seconds()
            with thread_limits(n_threads, torch=spec.uses_torch):
                result = spec.run(cfg, partial)
            result.seconds = time.perf_counter() - t0
            result.environment = environment(device=used, threads=n_threads, cpu_seconds=_cpu_seconds() - c0)
            write_run(result, partial)
            with _signals_blocked():
                if out_dir.exists():
                    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
                    os.replace(out_dir, old)
                    os.replace(partial, out_dir)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(partial, out_dir)
                if on_written is not None:
                    on_written(result, out_dir)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return result


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have ended (worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# -- every method ---------------------------------------------------------------------------------
def run_all(
    preset: str = "quick",
    out: str | Path | None = None,
    *,
    seeds: Sequence[int] | None = None,
    device: str | None = None,
    threads: int | None = None,
    quiet: bool | None = None,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[dict], None] | None = None,
    jobs: int = 1,
) -> list[dict]:
    """Run every method that has ``preset`` into ``out/<name>/`` and write ``out/summary.md``.

    A failing method is recorded and does not stop the others; ``device`` applies to the torch methods.
    Returns the summary entries (``name``, ``status`` ok/failed/skipped, ``seconds``, ``metric``, ``rows``,
    ``error``, ``folder``). On an interrupt the summary of what finished is written and the
    ``KeyboardInterrupt`` re-raised with ``.entries`` and ``.where`` (between methods, during one, or after
    one was written) attached. ``on_start(name)`` / ``on_done(entry)`` report progress.

    ``jobs`` > 1 runs that many methods at once, each in a child process of its own (progress bars off;
    ``on_start``/``on_done`` are still called here, in the order methods start and finish). Most methods run
    on one thread (``reprozoo info``), so ``jobs=2`` keeps both cores of a small machine busy; the
    summary lists methods in registry order whatever order they finished in. Methods that run on two threads
    (``ExperimentSpec.threads`` = 2) then share the cores with another method: OpenMP's default of spinning
    while it waits for a core burns the CPU the other method needs (a two-thread torch loop beside a busy
    core took 2.1x the wall time and 3.4x the CPU seconds), so ``jobs`` > 1 sets ``OMP_WAIT_POLICY=PASSIVE``
    when neither the user nor an earlier import of torch has fixed it (it changes no number, only how idle
    threads wait).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs={jobs!r} should be an int >= 1 (methods run at once)")
    if jobs > 1 and "torch" not in sys.modules:  # read once, when torch loads its OpenMP runtime
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    valid = list(dict.fromkeys(p for n in registry.names() for p in _presets_of(n)))
    if preset not in valid:
        raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(valid)} "
                          "(run all runs each method that has the preset and skips the others)")
    if seeds:
        seeds = _seed_tuple(seeds)
        check_seeds(list(seeds))
    if threads is not None:
        try:
            resolve_threads(threads)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    root = check_out(out if out is not None else default_out("all"), previous_run_ok=False)
    root.mkdir(parents=True, exist_ok=True)
    summary = root / "summary.md"
    header = (f"preset `{preset}`; seeds {', '.join(map(str, seeds)) if seeds else 'of each preset'}; "
              f"{jobs} method(s) at a time on {os.cpu_count()} CPUs; started {utc_now()}; "
              f"reprozoo {__version__} at git {git_commit()}")
    entries: list[dict] = []
    current: dict = {}  # the method running now (name, spec, t0, written); empty between methods

    def finish(entry: dict) -> None:
        entries.append(entry)
        write_summary(entries, summary, header)
        if on_done is not None:
            on_done(entry)

    if jobs > 1:
        return _run_parallel(preset, root, seeds, device, threads, jobs, finish, on_start, entries, summary,
                             header)

    with sigterm_raises():
        try:
            for name in registry.names():
                try:
                    spec = registry.get(name)
                except Exception as exc:  # e.g. a missing extra: one method must not stop the others
                    finish({"name": name, "status": "failed", "seconds": 0.0, "error": f"{type(exc).__name__}: "
                            f"{exc}", "folder": ""})
                    continue
                if preset not in spec.presets:
                    finish({"name": name, "status": "skipped", "error": f"no preset {preset!r}"})
                    continue
                current.update(name=name, spec=spec, t0=time.perf_counter(), written=None)
                if on_start is not None:
                    on_start(name)
                try:
                    run(name, preset, root / name, seeds=seeds, threads=threads, quiet=quiet,
                        device=device if spec.uses_torch else None,
                        on_written=lambda r, f: current.update(written=(r, f)))
                    entry = _ok_entry(spec, *current["written"])
                except Exception as exc:  # one failing method must not stop the others
                    entry = {"name": name, "status": "failed", "seconds": time.perf_counter() - current["t0"],
                             "error": f"{type(exc).__name__}: {exc}", "folder": ""}
                current.clear()
                finish(entry)
            write_summary(entries, summary, header)  # also when no method ran
        except KeyboardInterrupt as exc:
            status = "terminated" if isinstance(exc, Terminated) else "interrupted"
            if not current:  # between methods (e.g. while the last one's tables printed)
                last = entries[-1] if entries else None
                where = (f"after {last['name']} was complete and written" if last and last["status"] == "ok"
                         else "between methods")
            elif current["written"]:  # its folder is in place: that method is complete
                where = f"after {current['name']} was complete and written"
                entries.append(_ok_entry(current["spec"], *current["written"]))
            else:
                where = f"during {current['name']}"
                entries.append({"name": current["name"], "status": status,
                                "seconds": time.perf_counter() - current["t0"]})
            write_summary(entries, summary, header)
            exc.entries, exc.where, exc.summary = entries, where, summary  # type: ignore[attr-defined]
            raise
    return entries


def _presets_of(name: str) -> tuple[str, ...]:
    try:
        return registry.get(name).presets
    except Exception:
        return ()


def _ok_entry(spec: registry.ExperimentSpec, result: Result, folder: Path) -> dict:
    rows = primary_comparison(result, spec.primary_metric, spec.higher_is_better, spec.qualifies, spec.headline)
    cpu = result.environment.get("cpu_seconds")
    return {"name": spec.name, "status": "ok", "seconds": result.seconds, "metric": spec.primary_metric,
            "cpu_seconds": float(cpu) if cpu is not None else None, "rows": rows, "folder": str(folder)}


# -- every method, several at once ----------------------------------------------------------------
def _run_in_child(conn, name: str, preset: str, folder: Path, seeds, device, threads) -> None:
    """Child process of :func:`_run_parallel`: run one method quietly and send back its summary entry."""
    t0 = time.perf_counter()
    written: dict = {}
    try:
        spec = registry.get(name)
        run(name, preset, folder, seeds=seeds, threads=threads, quiet=True,
            device=device if spec.uses_torch else None,
            on_written=lambda r, f: written.update(entry=_ok_entry(spec, r, f)))
        conn.send(written["entry"])
    except KeyboardInterrupt as exc:
        conn.send(written.get("entry") or {"name": name, "seconds": time.perf_counter() - t0,
                                           "status": "terminated" if isinstance(exc, Terminated) else "interrupted"})
    except Exception as exc:  # one failing method must not stop the others
        conn.send({"name": name, "status": "failed", "seconds": time.perf_counter() - t0,
                   "error": f"{type(exc).__name__}: {exc}", "folder": ""})
    finally:
        conn.close()


def _run_parallel(preset, root, seeds, device, threads, jobs, finish, on_start, entries, summary,
                  header) -> list[dict]:
    """:func:`run_all` with up to ``jobs`` methods in child processes at once (fork where the platform has it,
    so a method registered at run time is seen by the children). On an interrupt every child still running
    gets SIGTERM (it removes its partial folder, as a single run does) and is listed as stopped."""
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    order = registry.names()
    todo: list[str] = []
    for name in order:
        try:
            spec = registry.get(name)
        except Exception as exc:  # e.g. a missing extra
            finish({"name": name, "status": "failed", "seconds": 0.0, "error": f"{type(exc).__name__}: {exc}",
                    "folder": ""})
            continue
        if preset not in spec.presets:
            finish({"name": name, "status": "skipped", "error": f"no preset {preset!r}"})
        else:
            todo.append(name)
    running: dict = {}  # sentinel -> (name, process, connection, t0)

    def collect(sentinel) -> dict:
        name, proc, conn, t0 = running.pop(sentinel)
        proc.join()
        try:
            entry = conn.recv()
        except (EOFError, OSError):  # killed before it could report (e.g. by the out-of-memory killer)
            why = (f"killed by signal {-proc.exitcode}" if proc.exitcode is not None and proc.exitcode < 0
                   else f"exit code {proc.exitcode}")
            entry = {"name": name, "status": "failed", "seconds": time.perf_counter() - t0, "folder": "",
                     "error": f"its process ended ({why}) before reporting", "died": True}
            shutil.rmtree(root / f".{name}.partial-{proc.pid}", ignore_errors=True)  # what run() would remove
        conn.close()
        return entry

    def ordered(done: list[dict]) -> list[dict]:
        return sorted(done, key=lambda e: order.index(e["name"]) if e["name"] in order else len(order))

    with _first_signal_raises((signal.SIGINT, signal.SIGTERM)):
        try:
            while todo or running:
                while todo and len(running) < jobs:
                    name = todo.pop(0)
                    receiver, sender = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_run_in_child, name=f"reprozoo-{name}",
                                       args=(sender, name, preset, root / name, seeds, device, threads))
                    if on_start is not None:
                        on_start(name)
                    proc.start()
                    sender.close()
                    running[proc.sentinel] = (name, proc, receiver, time.perf_counter())
                for sentinel in wait(list(running)):
                    entry = collect(sentinel)
                    entry.pop("died", None)
                    finish(entry)
            entries[:] = ordered(entries)
            write_summary(entries, summary, header)
        except KeyboardInterrupt as exc:
            status = "terminated" if isinstance(exc, Terminated) else "interrupted"
            stopped = [item[0] for item in running.values()]
            for _, proc, _, _ in running.values():
                if proc.is_alive():
                    proc.terminate()
            for sentinel in list(running):
                entry = collect(sentinel)
                if entry.pop("died", False):  # stopped by us, not failed
                    entry = {"name": entry["name"], "status": status, "seconds": entry["seconds"]}
                entries.append(entry)
            done = {e["name"] for e in entries}
            entries[:] = ordered(entries) + [{"name": n, "status": "not started", "error": f"run all was {status}"}
                                             for n in todo if n not in done]
            write_summary(entries, summary, header)
            where = f"during {', '.join(stopped)}" if stopped else "between methods"
            exc.entries, exc.where, exc.summary = entries, where, summary  # type: ignore[attr-defined]
            raise
    return entries
