"""Writes a run folder: ``result.json``, ``report.md`` (mean ± std tables) and ``figures/``.

Also the ``summary.md`` of ``reprozoo run all`` (each method's primary metric beside the best qualifying
baseline on the same data and seeds). Every file is written atomically.

Units and number formats are defined here once, for report.md, the CLI's tables and summary.md:

- a metric whose every value is an integer (``best_epoch``, ``moves``) prints without decimals (its mean
  over seeds with one decimal when that is not an integer);
- a metric named ``*flops*`` prints in GFLOPs and one named ``*bytes*`` in MB (result.json keeps the raw
  counts); the column header says the unit;
- other numbers print with 3 decimals (1 decimal from 100 up); the spread is the sample std over seeds, shown
  when there are several.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reprozoo.core.io import atomic_write_json, atomic_write_text
from reprozoo.core.results import Result, mean_std

__all__ = [
    "write_run", "markdown_tables", "table_blocks", "fmt_mean_std", "fmt_metric", "metric_unit",
    "primary_comparison", "write_summary", "seeds_phrase",
]

#: (substring of a metric name, unit shown, scale applied to the raw value)
UNITS = (("gflops", "GFLOPs", 1.0), ("flops", "GFLOPs", 1e-9), ("bytes", "MB", 1e-6))


def metric_unit(metric: str) -> tuple[str, float]:
    """``(unit, scale)`` a metric is shown in: ``("GFLOPs", 1e-9)`` for ``train_flops``, ``("", 1.0)`` if none."""
    low = metric.lower()
    for key, unit, scale in UNITS:
        if key in low:
            return unit, scale
    return "", 1.0


def fmt_mean_std(mean: float, std: float, n: int, *, integer: bool = False) -> str:
    """``0.712 ± 0.031`` (std omitted for a single seed); 3 decimals, 1 decimal from 100 up; integers bare.

    >>> fmt_mean_std(0.7123, 0.031, 3), fmt_mean_std(26.0, 0.0, 1, integer=True)
    ('0.712 ± 0.031', '26')
    >>> fmt_mean_std(26.5, 2.1, 2, integer=True)
    '26.5 ± 2.1'
    """
    if integer:
        if n == 1 or float(mean).is_integer() and std == 0:
            return f"{mean:.0f}"
        return f"{mean:.1f} ± {std:.1f}"
    digits = 1 if abs(mean) >= 100 else 3
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def fmt_metric(metric: str, values: list[float]) -> str:
    """The cell of ``metric`` over seeds: its unit applied, integers bare (see the module docstring)."""
    unit, scale = metric_unit(metric)
    integer = not unit and all(float(v).is_integer() for v in values)
    return fmt_mean_std(*mean_std([v * scale for v in values]), integer=integer)


def seeds_phrase(n: int) -> str:
    """``1 seed`` / ``3 seeds``."""
    return f"{n} seed" if n == 1 else f"{n} seeds"


@dataclass
class Block:
    """One table: a (dataset, setting) pair, its metric columns and one row per (method, role)."""

    dataset: str
    setting: str
    columns: list[str]  # metric names
    headers: list[str]  # metric names with their unit
    rows: list[tuple[str, str, list[str]]]  # (method, role, formatted cells)
    seeds: int

    @property
    def title(self) -> str:
        return self.dataset + ("" if self.setting == "default" else f" ({self.setting})")


def table_blocks(result: Result) -> list[Block]:
    """The run's tables, in first-seen order: what report.md and the CLI print."""
    values: dict[tuple[str, str], dict[tuple[str, str], dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in result.records:
        values[(r.dataset, r.setting)][(r.method, r.role)][r.metric].append(r.value)
    metrics = result.metrics()
    blocks = []
    for (dataset, setting), rows in values.items():
        cols = [m for m in metrics if any(m in by_metric for by_metric in rows.values())]
        headers = [m + (f" ({metric_unit(m)[0]})" if metric_unit(m)[0] else "") for m in cols]
        seeds = max(len(v) for by_metric in rows.values() for v in by_metric.values())
        cells = [(method, role, [fmt_metric(c, by_metric[c]) if c in by_metric else "" for c in cols])
                 for (method, role), by_metric in rows.items()]
        blocks.append(Block(dataset, setting, cols, headers, cells, seeds))
    return blocks


def markdown_tables(result: Result) -> str:
    """One markdown table per (dataset, setting): rows = methods, columns = metrics (mean ± std)."""
    parts = []
    for b in table_blocks(result):
        lines = [f"### {b.title}", "", f"mean ± std over {seeds_phrase(b.seeds)}", ""]
        lines.append("| method | role | " + " | ".join(b.headers) + " |")
        lines.append("|---|---|" + "---|" * len(b.headers))
        lines += [f"| {method} | {role} | " + " | ".join(cells) + " |" for method, role, cells in b.rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def write_run(result: Result, out_dir: str | Path) -> Path:
    """Write ``result.json`` and ``report.md`` into ``out_dir`` (figures are already there)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "result.json", result.to_dict())
    lines = [
        f"# {result.name} ({result.preset})",
        "",
        f"Started {result.started}, {result.seconds:.1f} s. Environment: "
        + ", ".join(f"{k} {v}" for k, v in result.environment.items()),
        "",
        markdown_tables(result),
    ]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    if result.figures:
        lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in result.figures]
    atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return out_dir


def primary_comparison(
    result: Result,
    metric: str,
    higher_is_better: bool = True,
    qualifies: Callable[[dict, dict], bool] | None = None,
    headline: tuple[str, ...] | None = None,
) -> list[tuple[str, str, float, str, float]]:
    """Per (dataset, setting): the best method row vs the best qualifying baseline on ``metric``.

    ``headline`` (see ``ExperimentSpec.headline``): the method-role rows that may stand for the method (None:
    all of them), so ablations and variants do not. ``qualifies(config, stats)`` (see
    ``ExperimentSpec.qualifies``) filters the baselines, and applies to the method too: a method row that does
    not qualify is named with "(does not qualify)" beside it. A block with no qualifying baseline is left out.
    Returns ``[(block, method, mean, best_baseline, mean), ...]``.
    """
    best = max if higher_is_better else min
    blocks: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: {"method": {}, "baseline": {}})
    for (dataset, setting, method, role), stats in result.summary().items():
        if metric not in stats or role not in ("method", "baseline"):
            continue
        if role == "method" and headline is not None and method not in headline:
            continue
        ok = qualifies is None or qualifies(result.config, stats)
        if role == "baseline" and not ok:
            continue
        name = method if ok else f"{method} (does not qualify)"
        block = dataset if setting == "default" else f"{dataset} ({setting})"
        blocks[block][role][name] = stats[metric][0]
    rows = []
    for block, d in blocks.items():
        if not d["method"] or not d["baseline"]:
            continue
        m = best(d["method"], key=d["method"].get)
        b = best(d["baseline"], key=d["baseline"].get)
        rows.append((block, m, d["method"][m], b, d["baseline"][b]))
    return rows


def write_summary(entries: list[dict], path: str | Path, header: str = "") -> Path:
    """``summary.md`` of ``run all``: one section per method (status, primary metric vs best baseline).

    ``entries``: dicts with keys name, status ("ok", "failed", "skipped" (no such preset),
    "interrupted", "terminated" or "not started" (run all was stopped first)), seconds (absent or None for a
    skipped method: shown as "—"),
    cpu_seconds (of a complete run), metric, rows (from :func:`primary_comparison`), error (why it failed or
    was skipped), folder. ``header``: a line under the title saying what was run (preset, seeds, commit...).
    Seconds are wall-clock seconds of each method's run; CPU seconds its user + system time, worker
    processes included.
    """
    lines = ["# reprozoo run all", ""] + ([header, ""] if header else [])
    lines += ["| method | status | seconds | CPU seconds | primary metric | folder |", "|---|---|---|---|---|---|"]
    for e in entries:
        seconds, cpu = (f"{e[k]:.1f}" if e.get(k) is not None else "—" for k in ("seconds", "cpu_seconds"))
        lines.append(f"| {e['name']} | {e['status']} | {seconds} | {cpu} | {e.get('metric', '')} | "
                     f"{e.get('folder', '')} |")
    for e in entries:
        lines += ["", f"## {e['name']}", ""]
        if e["status"] in ("skipped", "not started"):
            lines.append(f"{e['status']}: {e.get('error', 'not run')}")
            continue
        if e["status"] in ("interrupted", "terminated"):
            lines.append(f"{e['status']} before it finished")
            continue
        if e["status"] != "ok":
            lines.append(f"FAILED: {e.get('error', 'unknown error')}")
            continue
        if not e.get("rows"):
            lines.append("(no method/baseline pair on the primary metric)")
            continue
        lines += [f"| data | method | {e['metric']} | best baseline | {e['metric']} |", "|---|---|---|---|---|"]
        for block, m, mv, b, bv in e["rows"]:
            lines.append(f"| {block} | {m} | {fmt_mean_std(mv, 0.0, 1)} | {b} | {fmt_mean_std(bv, 0.0, 1)} |")
    return atomic_write_text(path, "\n".join(lines) + "\n")
