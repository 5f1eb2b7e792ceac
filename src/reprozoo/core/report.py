"""Writes a run folder: ``result.json``, ``report.md`` (mean ± std tables) and ``figures/``.

Also the ``summary.md`` of ``reprozoo run all`` (each method's primary metric beside the
best baseline on the same data and seeds). Every file is written atomically.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from reprozoo.core.io import atomic_write_json, atomic_write_text
from reprozoo.core.results import Result

__all__ = ["write_run", "markdown_tables", "fmt_mean_std", "primary_comparison", "write_summary"]


def fmt_mean_std(mean: float, std: float, n: int) -> str:
    """``0.712 ± 0.031`` (std omitted for a single seed); 3 significant decimals."""
    if abs(mean) >= 100:
        return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def markdown_tables(result: Result) -> str:
    """One markdown table per (dataset, setting): rows = methods, columns = metrics (mean ± std)."""
    summary = result.summary()
    by_block: dict[tuple[str, str], list[tuple[str, str, dict]]] = defaultdict(list)
    for (dataset, setting, method, role), stats in summary.items():
        by_block[(dataset, setting)].append((method, role, stats))
    metrics = result.metrics()
    parts = []
    for (dataset, setting), rows in by_block.items():
        cols = [m for m in metrics if any(m in s for _, _, s in rows)]
        title = f"### {dataset}" + (f" ({setting})" if setting != "default" else "")
        seeds = max(s[c][2] for _, _, s in rows for c in cols if c in s)
        lines = [title, "", f"mean ± std over {seeds} seed(s)", ""]
        lines.append("| method | role | " + " | ".join(cols) + " |")
        lines.append("|---|---|" + "---|" * len(cols))
        for method, role, stats in rows:
            cells = [fmt_mean_std(*stats[c]) if c in stats else "" for c in cols]
            lines.append(f"| {method} | {role} | " + " | ".join(cells) + " |")
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
    result: Result, metric: str, higher_is_better: bool = True
) -> list[tuple[str, str, float, str, float]]:
    """Per (dataset, setting): the best method-role row vs the best baseline on ``metric``.

    Returns ``[(block, method, mean, best_baseline, mean), ...]`` (means over seeds).
    """
    best = max if higher_is_better else min
    blocks: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: {"method": {}, "baseline": {}})
    for (dataset, setting, method, role), stats in result.summary().items():
        if metric in stats and role in ("method", "baseline"):
            block = dataset if setting == "default" else f"{dataset} ({setting})"
            blocks[block][role][method] = stats[metric][0]
    rows = []
    for block, d in blocks.items():
        if not d["method"] or not d["baseline"]:
            continue
        m = best(d["method"], key=d["method"].get)
        b = best(d["baseline"], key=d["baseline"].get)
        rows.append((block, m, d["method"][m], b, d["baseline"][b]))
    return rows


def write_summary(entries: list[dict], path: str | Path) -> Path:
    """``summary.md`` of ``run all``: one section per method (status, primary metric vs best baseline).

    ``entries``: dicts with keys name, status ("ok", "failed", "skipped" (no such preset),
    "interrupted" or "terminated"), seconds (absent or None for a skipped method: shown as "—"), metric,
    rows (from :func:`primary_comparison`), error (why it failed or was skipped), folder.
    """
    lines = ["# reprozoo run all", ""]
    lines += ["| method | status | seconds | primary metric | folder |", "|---|---|---|---|---|"]
    for e in entries:
        seconds = f"{e['seconds']:.1f}" if e.get("seconds") is not None else "—"  # skipped: never ran
        lines.append(f"| {e['name']} | {e['status']} | {seconds} | {e.get('metric', '')} | "
                     f"{e.get('folder', '')} |")
    for e in entries:
        lines += ["", f"## {e['name']}", ""]
        if e["status"] == "skipped":
            lines.append(f"skipped: {e.get('error', 'not run')}")
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
            lines.append(f"| {block} | {m} | {mv:.3f} | {b} | {bv:.3f} |")
    return atomic_write_text(path, "\n".join(lines) + "\n")
