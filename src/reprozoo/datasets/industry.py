"""Industry classification systems (GICS, NAICS 2017, SIC 1987) and firms labelled with them.

:class:`ICS` is one version of a classification tree: ``codes``, ``parent``, ``children``, ``level``,
``title``, ``definition``, plus what is known of its past (``history``: the dated definitions of the same
industries in earlier versions; ``introduced``: when each node first appeared). Built by
``ICS.gics(version)``, ``ICS.naics2017()``, ``ICS.sic1987()`` or ``ICS.from_csv(...)``.

Firms: :func:`load_firms_2020` (2,964 Russell 3000 firms, 2020 GICS sub-industry in the 2018 structure,
Bloomberg/Yahoo/Wikipedia descriptions, SEC SIC code for 2,105 of them) and :func:`load_sp500_spells` (dated
GICS assignments of S&P 500 firms 2023-2026 from Wikipedia's list, vandalism filtered, with 2024 Yahoo
business summaries). Files live in ``data/{gics_versions,firms_2020_gics_sic,sp500_gics,industry_ics}``
(see each PROVENANCE.md).

>>> gics = ICS.gics("2023")
>>> len(gics.leaves), gics.n_levels, gics.title["25503030"]
(163, 4, 'Broadline Retail')
>>> gics.path("25503030")
('25', '2550', '255030', '25503030')
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reprozoo.datasets._paths import find_data_file

__all__ = [
    "ICS",
    "GICS_VERSIONS",
    "FirmSet",
    "SpellSet",
    "decimal_year",
    "load_firms_2020",
    "load_sp500_spells",
    "load_crosswalk",
    "gics_code_map",
    "read_table",
]

#: GICS versions shipped, by year, with their effective dates (data/gics_versions/PROVENANCE.md)
GICS_VERSIONS = {"2014": "20140228", "2016": "20160901", "2018": "20180929", "2023": "20230318"}
_SRC_GICS = "github.com/dorklein/py-gics (see data/gics_versions/PROVENANCE.md)"
_SRC_FIRMS = "github.com/Sivalavida/Text-based-Industry-Classification (see data/firms_2020_gics_sic/PROVENANCE.md)"
_SRC_SP500 = "github.com/datasets/s-and-p-500-companies history (see data/sp500_gics/PROVENANCE.md)"
_SRC_ICS = "github.com/rajrao/NAICS and github.com/rtlee9/SIC-list (see data/industry_ics/PROVENANCE.md)"
#: the day the 2020 firm labels were pulled (Bloomberg field, 2020-09-17)
FIRMS_2020_DATE = "2020-09-17"


def decimal_year(value: Any, name: str = "time") -> float:
    """A time as a decimal year: a number is taken as is (2020.5), a date, datetime, ``numpy.datetime64`` or an
    ISO string ``YYYY[-MM[-DD]]`` is converted (2020-07-02 -> 2020.5). Raises ``TypeError``/``ValueError`` naming
    ``name``.

    >>> round(decimal_year("2023-03-18"), 4), decimal_year(2020)
    (2023.2082, 2020.0)
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} should be a year (number) or a date, got bool")
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        if not np.isfinite(v):
            raise ValueError(f"{name}={value!r} should be finite")
        return v
    if isinstance(value, np.datetime64):
        value = value.astype("datetime64[D]").item()
    if isinstance(value, str):
        text = value.strip()
        try:
            if re.fullmatch(r"\d{4}", text):
                return float(text)
            if re.fullmatch(r"\d{4}-\d{2}", text):
                text += "-01"
            value = _dt.date.fromisoformat(text[:10])
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a date; give YYYY, YYYY-MM, YYYY-MM-DD or a number") from None
    if isinstance(value, _dt.datetime):
        value = value.date()
    if isinstance(value, _dt.date):
        start = _dt.date(value.year, 1, 1)
        days = (_dt.date(value.year + 1, 1, 1) - start).days
        return value.year + (value - start).days / days
    raise TypeError(f"{name} should be a year (number) or a date, got {type(value).__name__}")


def _norm_name(s: str) -> str:
    """Name key: lower case, one space around '&', whitespace collapsed (GICS names carry stray spaces)."""
    s = re.sub(r"\s*&\s*", " & ", s)
    return re.sub(r"\s+", " ", s).strip().lower()


def read_table(path: str | Path, *, delimiter: str | None = None, encoding: str = "utf-8-sig") -> list[list[str]]:
    """Rows of a delimited text file, the delimiter detected among ``, \\t | ;`` when not given.

    >>> read_table(io.StringIO("a\\tb\\n1\\t2\\n"))
    [['a', 'b'], ['1', '2']]
    """
    text = path.read() if isinstance(path, io.StringIO) else Path(path).read_text(encoding=encoding)
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",\t|;").delimiter
        except csv.Error:
            delimiter = ","
    return [row for row in csv.reader(io.StringIO(text), delimiter=delimiter)]


@dataclass(frozen=True)
class ICS:
    """One version of an industry classification system: a tree of codes.

    Parameters
    ----------
    name : str
        E.g. ``"GICS 2023"``.
    codes : tuple of str
        Every node, parents before children.
    parent : dict
        ``code -> parent code`` (``None`` for the top level).
    title, definition : dict
        ``code -> text``. ``definition`` falls back to the title where the source has none.
    level_names : tuple of str
        Names of the levels, top first (``("sector", "industry group", "industry", "sub-industry")``).
    effective : float or None
        When this version took effect (decimal year).
    history : tuple of (float, dict)
        Dated definitions of this version's nodes in earlier versions, oldest first: ``(time, {code: text})``;
        a node present in an earlier version (same code and name, or the same name under another code) has its
        earlier definition there. The current definitions are not repeated.
    introduced : dict
        ``code -> time`` of the first version holding the node (``effective`` for nodes new in this version).

    Attributes
    ----------
    children : dict, ``code -> tuple of child codes`` (``None`` key: the top level)
    level : dict, ``code -> 1..n_levels``
    leaves : tuple of codes without children
    """

    name: str
    codes: tuple[str, ...]
    parent: Mapping[str, str | None]
    title: Mapping[str, str]
    definition: Mapping[str, str]
    level_names: tuple[str, ...]
    effective: float | None = None
    history: tuple[tuple[float, Mapping[str, str]], ...] = ()
    introduced: Mapping[str, float] = field(default_factory=dict)

    __hash__ = object.__hash__  # equal by content (so a cloned estimator's copy compares equal), hashed by id

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for c in self.codes:
            p = self.parent.get(c, "<missing>")
            if p == "<missing>":
                raise ValueError(f"ICS {self.name!r}: code {c!r} has no parent entry")
            if p is not None and p not in seen:
                raise ValueError(f"ICS {self.name!r}: parent {p!r} of {c!r} is not listed before it")
            seen.add(c)
        if len(seen) != len(self.codes):
            raise ValueError(f"ICS {self.name!r}: codes repeat")

    # -- structure ------------------------------------------------------------------------
    @functools.cached_property
    def children(self) -> dict[str | None, tuple[str, ...]]:
        out: dict[str | None, list[str]] = {c: [] for c in self.codes}
        out[None] = []
        for c in self.codes:
            out[self.parent[c]].append(c)
        return {k: tuple(v) for k, v in out.items()}

    @functools.cached_property
    def level(self) -> dict[str, int]:
        lv: dict[str, int] = {}
        for c in self.codes:
            p = self.parent[c]
            lv[c] = 1 if p is None else lv[p] + 1
        return lv

    @functools.cached_property
    def leaves(self) -> tuple[str, ...]:
        return tuple(c for c in self.codes if not self.children[c])

    @property
    def n_levels(self) -> int:
        return max(self.level.values())

    def codes_at(self, level: int) -> tuple[str, ...]:
        """The nodes at ``level`` (1 = top)."""
        return tuple(c for c in self.codes if self.level[c] == level)

    def path(self, code: str) -> tuple[str, ...]:
        """Ancestors of ``code``, top level first, ending with ``code``."""
        self.check_codes([code], "code")
        out = [code]
        while self.parent[out[-1]] is not None:
            out.append(self.parent[out[-1]])
        return tuple(reversed(out))

    def ancestor_at(self, code: str, level: int) -> str | None:
        """The ancestor of ``code`` at ``level`` (``code`` itself at its own level; None below it)."""
        p = self.path(code)
        return p[level - 1] if level <= len(p) else None

    def __contains__(self, code: object) -> bool:
        return code in self.parent

    def __len__(self) -> int:
        return len(self.codes)

    def __repr__(self) -> str:
        counts = "/".join(str(len(self.codes_at(lv))) for lv in range(1, self.n_levels + 1))
        return f"ICS({self.name!r}, {counts} nodes by level)"

    def check_codes(self, codes: Iterable[Any], name: str = "codes") -> list[str]:
        """Return ``codes`` as strings after checking each is a node; the error names ``name``."""
        out = []
        for i, c in enumerate(codes):
            if not isinstance(c, str) or c not in self.parent:
                near = [k for k in self.codes if isinstance(c, str) and k.startswith(c[:2])][:5]
                hint = f" (codes starting alike: {near})" if near else ""
                raise ValueError(f"{name}[{i}]={c!r} is not a code of {self.name}{hint}")
            out.append(c)
        return out

    def nearest(self, code: str) -> str | None:
        """``code`` if it is a node, else its longest prefix (trailing zeros dropped) that is one, else None.

        Maps the SEC's group-level SIC codes (``3350`` -> industry group ``335``) onto the 1987 tree.
        """
        if code in self.parent:
            return code
        c = code
        while len(c) > 1:
            c = c[:-1]
            if c in self.parent:
                return c
        return None

    def truncate(self, depth: int) -> ICS:
        """The tree cut below ``depth`` levels (the nodes at ``depth`` become leaves)."""
        keep = tuple(c for c in self.codes if self.level[c] <= depth)
        ks = set(keep)
        return ICS(
            name=self.name, codes=keep, parent={c: self.parent[c] for c in keep},
            title={c: self.title[c] for c in keep}, definition={c: self.definition[c] for c in keep},
            level_names=self.level_names[:depth], effective=self.effective,
            history=tuple((t, {c: d for c, d in defs.items() if c in ks}) for t, defs in self.history),
            introduced={c: t for c, t in self.introduced.items() if c in ks},
        )

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        *,
        code: str = "code",
        parent: str = "parent",
        title: str = "title",
        definition: str | None = None,
        level_names: Sequence[str] | None = None,
        name: str | None = None,
        delimiter: str | None = None,
    ) -> ICS:
        """An ICS from a table with one row per node (header row; delimiter detected when not given).

        ``code``/``parent``/``title``/``definition`` name the columns; an empty parent marks the top level;
        rows may come in any order. Raises ``ValueError`` naming the file for a missing column or a parent
        that is not a code.
        """
        path = Path(path)
        rows = read_table(path, delimiter=delimiter)
        if not rows:
            raise ValueError(f"path={str(path)!r}: empty file")
        header = [h.strip() for h in rows[0]]
        cols = {"code": code, "parent": parent, "title": title} | ({"definition": definition} if definition else {})
        idx = {}
        for key, col in cols.items():
            if col not in header:
                raise ValueError(f"path={str(path)!r} has no column {col!r} (argument {key}=); columns: {header}")
            idx[key] = header.index(col)
        recs = {}
        for row in rows[1:]:
            if not any(cell.strip() for cell in row):
                continue
            c = row[idx["code"]].strip()
            recs[c] = (row[idx["parent"]].strip() or None, row[idx["title"]].strip(),
                       row[idx["definition"]].strip() if definition else "")
        for c, (p, _, _) in recs.items():
            if p is not None and p not in recs:
                raise ValueError(f"path={str(path)!r}: parent {p!r} of code {c!r} is not a code in the file")
        order = _topological({c: r[0] for c, r in recs.items()})
        lv_names = tuple(level_names) if level_names else ()
        ics = cls(
            name=name or path.stem, codes=order, parent={c: recs[c][0] for c in order},
            title={c: recs[c][1] for c in order},
            definition={c: recs[c][2] or recs[c][1] for c in order}, level_names=lv_names,
        )
        if not lv_names:
            object.__setattr__(ics, "level_names", tuple(f"level {i}" for i in range(1, ics.n_levels + 1)))
        return ics

    @classmethod
    def gics(cls, version: str = "2023", path: str | Path | None = None) -> ICS:
        """GICS in ``version`` (``"2014"``, ``"2016"``, ``"2018"``, ``"2023"``, or the effective date
        ``YYYYMMDD``): 4 levels, every sub-industry with its official definition (names elsewhere).

        ``history`` holds the definitions of the same industries in the earlier shipped versions;
        ``introduced`` when each node first appeared (code or name match with the previous version).
        """
        key = str(version)
        stamp = GICS_VERSIONS.get(key, key)
        if stamp not in GICS_VERSIONS.values():
            raise ValueError(f"version={version!r} is not a shipped GICS version; choose one of "
                             f"{list(GICS_VERSIONS)} (or {list(GICS_VERSIONS.values())})")
        tables = _gics_tables(str(path) if path else None)
        stamps = sorted(GICS_VERSIONS.values())
        cur = tables[stamp]
        codes = tuple(sorted(cur, key=lambda c: (len(c), c)))
        title = {c: re.sub(r"\s+", " ", cur[c][0]).strip() for c in codes}
        definition = {c: (cur[c][1].strip() or title[c]) for c in codes}
        # the same industry in earlier versions, walked back one version at a time (code+name, or name)
        history = []
        same = {c: c for c in codes}  # code in this version -> code of the same industry in the version looked at
        introduced = {c: _stamp_year(stamp) for c in codes}
        looked = stamp
        for old in reversed([s for s in stamps if s < stamp]):
            prev = tables[old]
            by_name = {(len(c), _norm_name(v[0])): c for c, v in prev.items()}
            nxt = {}
            for c, oc in same.items():
                key = (len(oc), _norm_name(tables[looked][oc][0]))
                if oc in prev:  # same code (possibly renamed: the industry's scope was redefined)
                    nxt[c] = oc
                elif key in by_name:  # moved: same name under a new code
                    nxt[c] = by_name[key]
            defs = {c: (prev[oc][1].strip() or re.sub(r"\s+", " ", prev[oc][0]).strip()) for c, oc in nxt.items()}
            for c in nxt:
                introduced[c] = _stamp_year(old)
            history.append((_stamp_year(old), defs))
            same, looked = nxt, old
        return cls(
            name=f"GICS {stamp[:4]}", codes=codes, parent={c: (c[:-2] or None) for c in codes}, title=title,
            definition=definition, level_names=("sector", "industry group", "industry", "sub-industry"),
            effective=_stamp_year(stamp), history=tuple(reversed(history)), introduced=introduced,
        )

    @classmethod
    def naics2017(cls, path: str | Path | None = None) -> ICS:
        """NAICS 2017: 2,196 codes over 5 levels (sector, subsector, industry group, industry, national
        industry) with the Census definitions; the range sectors 31-33, 44-45, 48-49 are the parents of their
        subsectors; the footnote marker "T" ending some titles is stripped; "See industry description for N"
        stubs take N's definition, empty ones ("NULL") the title."""
        p = Path(path) if path else find_data_file(["industry_ics/naics2017_descriptions.csv"], source=_SRC_ICS)
        rows = read_table(p, delimiter=",")
        head = rows[0]
        if head[:3] != ["Code", "Title", "Description"]:
            raise ValueError(f"path={str(p)!r}: expected columns Code,Title,Description, got {head[:3]}")
        title, desc = {}, {}
        for row in rows[1:]:
            if not row or not row[0].strip():
                continue
            c = row[0].strip()
            title[c] = re.sub(r"(?<=[a-z)])T$", "", row[1].strip())
            desc[c] = row[2].strip()
        sector_of = {}
        for c in title:
            if len(c) == 2:
                sector_of[c] = c
            elif "-" in c:
                a, b = c.split("-")
                for k in range(int(a), int(b) + 1):
                    sector_of[str(k)] = c
        parent = {c: (None if len(c) == 2 or "-" in c else sector_of[c[:2]] if len(c) == 3 else c[:-1])
                  for c in title}
        for c, d in desc.items():
            m = re.match(r"See industry description for (\d+)", d)
            if m and m.group(1) in desc:
                desc[c] = desc[m.group(1)]
            elif not d or d.upper() == "NULL":
                desc[c] = title[c]
        codes = _topological(parent)
        return cls(name="NAICS 2017", codes=codes, parent=parent, title=title, definition=desc,
                   level_names=("sector", "subsector", "industry group", "industry", "national industry"),
                   effective=2017.0, introduced={c: 2017.0 for c in codes})

    @classmethod
    def sic1987(cls, path: str | Path | None = None) -> ICS:
        """SIC 1987 (OSHA manual): 10 divisions (A-J), 83 major groups (2 digits), 416 industry groups
        (3 digits), 1,005 industries (4 digits). Titles only: ``definition`` is the title."""
        p = Path(path) if path else find_data_file(["industry_ics/sic1987_osha_hierarchy.csv"], source=_SRC_ICS)
        rows = read_table(p, delimiter=",")
        need = ["SIC4_cd", "SIC4_desc", "ind_cd", "ind_desc", "maj_cd", "maj_desc", "div_cd", "div_desc"]
        if rows[0] != need:
            raise ValueError(f"path={str(p)!r}: expected columns {need}, got {rows[0]}")
        parent: dict[str, str | None] = {}
        title: dict[str, str] = {}
        for r in rows[1:]:
            if len(r) < 8:
                continue
            s4, t4, s3, t3, s2, t2, s1, t1 = (x.strip() for x in r[:8])
            for c, t, p_ in ((s1, t1, None), (s2, t2, s1), (s3, t3, s2), (s4, t4, s3)):
                parent.setdefault(c, p_)
                title.setdefault(c, t)
        codes = _topological(parent)
        return cls(name="SIC 1987", codes=codes, parent=parent, title=title, definition=dict(title),
                   level_names=("division", "major group", "industry group", "industry"),
                   effective=1987.0, introduced={c: 1987.0 for c in codes})


def gics_code_map(old: ICS, new: ICS) -> dict[str, str]:
    """Map each code of GICS version ``old`` to the node of ``new`` holding the same industry: the same name
    at the same level (a moved industry), else the same code (a renamed one), else the nearest ancestor that
    still exists (a removed industry's firms go to its group). Codes with no counterpart at all are left out.

    >>> m = gics_code_map(ICS.gics("2018"), ICS.gics("2023"))
    >>> m["45102020"], m["25502020"]
    ('20202030', '2550')
    """
    by_name = {(len(c), _norm_name(new.title[c])): c for c in new.codes}
    out = {}
    for c in old.codes:
        hit = by_name.get((len(c), _norm_name(old.title[c])))
        if hit is None and c in new:
            hit = c
        a = c
        while hit is None and len(a) > 2:
            a = a[:-2]
            mapped = out.get(a)
            hit = mapped if mapped is not None else None
        if hit is not None:
            out[c] = hit
    return out


def _topological(parent: Mapping[str, str | None]) -> tuple[str, ...]:
    """Codes ordered by depth, then code (parents first)."""
    depth: dict[str, int] = {}

    def d(c: str) -> int:
        if c not in depth:
            p = parent[c]
            depth[c] = 0 if p is None else d(p) + 1
        return depth[c]

    return tuple(sorted(parent, key=lambda c: (d(c), c)))


def _stamp_year(stamp: str) -> float:
    return decimal_year(f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:]}")


@functools.lru_cache(maxsize=2)
def _gics_tables(path: str | None) -> dict[str, dict[str, tuple[str, str]]]:
    p = Path(path) if path else find_data_file(["gics_versions/gics_definitions_all_versions.csv"], source=_SRC_GICS)
    rows = read_table(p, delimiter=",")
    if rows[0][:6] != ["version", "code", "level", "parent_code", "name", "description"]:
        raise ValueError(f"path={str(p)!r}: unexpected columns {rows[0]}")
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for r in rows[1:]:
        if len(r) >= 6:
            out.setdefault(r[0], {})[r[1]] = (r[4], r[5])
    return out


def load_crosswalk(direction: str = "sic_to_naics", path: str | Path | None = None) -> list[tuple[str, str]]:
    """SIC <-> NAICS pairs ``(sic, naics)`` from the Census crosswalks, many-to-many; the delimiter is
    detected (``crosswalk_sic_to_naics.csv`` is tab-separated despite its name). SIC codes are zero-padded
    to 4 digits."""
    files = {"sic_to_naics": "crosswalk_sic_to_naics.csv", "naics_to_sic": "crosswalk_naics_to_sic.csv"}
    if direction not in files:
        raise ValueError(f"direction={direction!r} is not valid; choose one of {list(files)}")
    p = Path(path) if path else find_data_file([f"industry_ics/{files[direction]}"], source=_SRC_ICS)
    rows = read_table(p)
    if len(rows[0]) < 4 or not rows[0][0].strip().startswith("SIC"):
        raise ValueError(f"path={str(p)!r}: expected columns 'SIC Code, SIC Description, NAICS Code, ...', "
                         f"got {rows[0]}")
    return [(r[0].strip().zfill(4), r[2].strip()) for r in rows[1:] if len(r) >= 4 and r[0].strip()]


# -- firms ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FirmSet:
    """Firms with a text and labels: ``ids`` (tickers), ``texts``, ``gics`` (sub-industry codes, GICS 2018
    structure), ``sic`` (SEC SIC code mapped onto the SIC 1987 tree, ``""`` where none), ``time`` (decimal year
    of the labels)."""

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    gics: tuple[str, ...]
    sic: tuple[str, ...]
    time: float

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int] | np.ndarray) -> FirmSet:
        idx = [int(i) for i in index]
        return FirmSet(tuple(self.ids[i] for i in idx), tuple(self.texts[i] for i in idx),
                       tuple(self.gics[i] for i in idx), tuple(self.sic[i] for i in idx), self.time)


_FIRM_SOURCES = ("any", "bloomberg", "yahoo", "wikipedia")


def load_firms_2020(source: str = "any", *, drop_empty: bool = True) -> FirmSet:
    """The 2,964 Russell 3000 firms with their 2020 GICS sub-industry and business description.

    ``source``: ``"bloomberg"`` (2-3 sentences, 2,769 of the firms), ``"yahoo"`` (about 170 words, 93 empty),
    ``"wikipedia"`` (lead paragraphs, 687 empty; some pages are homonyms) or ``"any"`` (Bloomberg, else Yahoo,
    else Wikipedia). Firms with an empty text are dropped unless ``drop_empty=False``. ``sic``: the SEC code of
    the ticker's registrant (the one listed on an exchange when a ticker has several), mapped to its node in the
    SIC 1987 tree (SEC group-level codes such as 3350 -> industry group 335).
    """
    if source not in _FIRM_SOURCES:
        raise ValueError(f"source={source!r} is not valid; choose one of {list(_FIRM_SOURCES)}")
    root = "firms_2020_gics_sic/"
    labels = read_table(find_data_file([root + "russell3000_ticker_gics_2020.csv"], source=_SRC_FIRMS), delimiter=",")
    gics = {r[0].strip(): r[1].strip() for r in labels if len(r) >= 2}
    text: dict[str, str] = {}
    for src in (("bloomberg", "yahoo", "wikipedia") if source == "any" else (source,)):
        rows = read_table(find_data_file([root + f"russell3000_desc_{src}_2020.csv"], source=_SRC_FIRMS),
                          delimiter=",")
        if src == "bloomberg":  # no header: ticker, NAME, description
            got = {r[0].strip(): r[2].strip() for r in rows if len(r) >= 3}
        else:
            got = {r[0].strip(): r[1].strip() for r in rows[1:] if len(r) >= 2}
        for t, d in got.items():
            if d and not text.get(t):
                text[t] = d
    sec = read_table(find_data_file([root + "sec_cik_ticker_sic.psv"], source=_SRC_FIRMS), delimiter="|")
    sic_tree = ICS.sic1987()
    best: dict[str, tuple[int, str]] = {}
    for r in sec[1:]:
        if len(r) < 5 or r[1] not in gics or not r[4].strip():
            continue
        rank = 0 if r[3].strip() else 1  # prefer a registrant listed on an exchange
        if r[1] not in best or rank < best[r[1]][0]:
            best[r[1]] = (rank, r[4].strip().zfill(4))
    sic = {t: (sic_tree.nearest(code) or "") for t, (_, code) in best.items()}
    ids = [t for t in gics if (text.get(t, "") or not drop_empty)]
    return FirmSet(ids=tuple(ids), texts=tuple(text.get(t, "") for t in ids), gics=tuple(gics[t] for t in ids),
                   sic=tuple(sic.get(t, "") for t in ids), time=decimal_year(FIRMS_2020_DATE))


@dataclass(frozen=True)
class SpellSet:
    """Dated GICS assignments of S&P 500 firms: one row per (symbol, spell) with the sub-industry ``code`` in
    the GICS 2023 tree, ``start``/``end`` (decimal years, when the label was first and last observed), the
    firm's 2024 Yahoo business summary in ``texts[symbol]``; ``dropped`` counts the spells filtered out, by
    reason."""

    symbols: tuple[str, ...]
    codes: tuple[str, ...]
    start: np.ndarray
    end: np.ndarray
    texts: Mapping[str, str]
    dropped: Mapping[str, int]

    def __len__(self) -> int:
        return len(self.symbols)


def load_sp500_spells(min_days: int = 14, ics: ICS | None = None) -> SpellSet:
    """The S&P 500 GICS spells 2023-2026 (Wikipedia's list), filtered: spells shorter than ``min_days``
    (vandalism is reverted within days) and labels that are not an official sub-industry name of ``ics``
    (default GICS 2023: drops stale 2018 names and typos such as "Specialty Bust Chemicals") are dropped;
    firms without a summary are dropped. Names map to codes through the GICS table."""
    if isinstance(min_days, bool) or not isinstance(min_days, int) or min_days < 0:
        raise ValueError(f"min_days={min_days!r} should be an int >= 0")
    ics = ics or ICS.gics("2023")
    by_name = {_norm_name(ics.title[c]): c for c in ics.leaves}
    hist = read_table(find_data_file(["sp500_gics/gics_assignment_history.csv"], source=_SRC_SP500), delimiter=",")
    comp = read_table(find_data_file(["sp500_gics/sp500_companies_yahoo.csv"], source=_SRC_SP500), delimiter=",")
    h = comp[0]
    texts = {r[h.index("Symbol")].replace("-", "."): r[h.index("Longbusinesssummary")].strip()
             for r in comp[1:] if len(r) == len(h)}
    head = hist[0]
    col = {k: head.index(k) for k in ("symbol", "gics_sub_industry", "first_seen", "last_seen")}
    symbols, codes, start, end = [], [], [], []
    dropped = {"short": 0, "unofficial label": 0, "no summary": 0}
    for r in hist[1:]:
        if len(r) != len(head):
            continue
        sym = r[col["symbol"]].strip()
        a, b = _dt.date.fromisoformat(r[col["first_seen"]]), _dt.date.fromisoformat(r[col["last_seen"]])
        code = by_name.get(_norm_name(r[col["gics_sub_industry"]]))
        if (b - a).days < min_days:
            dropped["short"] += 1
        elif code is None:
            dropped["unofficial label"] += 1
        elif not texts.get(sym):
            dropped["no summary"] += 1
        else:
            symbols.append(sym)
            codes.append(code)
            start.append(decimal_year(a))
            end.append(decimal_year(b))
    return SpellSet(symbols=tuple(symbols), codes=tuple(codes), start=np.asarray(start), end=np.asarray(end),
                    texts=texts, dropped=dropped)
