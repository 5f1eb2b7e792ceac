"""Loaders of the industry data: counts against PROVENANCE.md, parsing details, bad input."""

import io

import numpy as np
import pytest

from reprozoo.datasets.industry import (
    GICS_VERSIONS,
    ICS,
    decimal_year,
    load_crosswalk,
    load_firms_2020,
    load_sp500_spells,
    read_table,
)

# (sectors, industry groups, industries, sub-industries) per version, data/gics_versions/PROVENANCE.md
GICS_COUNTS = {"2014": (10, 24, 70, 170), "2016": (11, 24, 68, 157), "2018": (11, 24, 69, 158),
               "2023": (11, 25, 74, 163)}


@pytest.mark.parametrize("version", list(GICS_VERSIONS))
def test_gics_counts_and_tree(version):
    g = ICS.gics(version)
    assert tuple(len(g.codes_at(lv)) for lv in range(1, 5)) == GICS_COUNTS[version]
    assert len(g.leaves) == GICS_COUNTS[version][3] and all(len(c) == 8 for c in g.leaves)
    assert all(g.parent[c] == (c[:-2] or None) for c in g.codes)
    assert all(g.definition[c] and g.definition[c] != g.title[c] for c in g.leaves)  # official definitions
    assert g.history == tuple(sorted(g.history, key=lambda h: h[0]))
    assert all(t < g.effective for t, _ in g.history)


def test_gics_history_and_new_industries():
    g = ICS.gics("2023")
    new = {c for c in g.leaves if g.introduced[c] == g.effective}
    # created by the 2023 revision (neither code nor name in 2018)
    assert {"25503030", "40201060", "20304030", "20304040"} <= new and len(new) == 12
    assert "20202030" not in new  # Data Processing & Outsourced Services moved from 45102020
    t18, defs18 = g.history[-1]
    assert round(t18, 2) == 2018.74 and "20202030" in defs18 and "25503030" not in defs18
    assert g.title["10"] == "Energy" and "Health Care  Services" not in g.title.values()


def test_naics_counts_ranges_and_footnotes():
    n = ICS.naics2017()
    assert len(n.codes) == 2196 and n.n_levels == 5
    assert [len(n.codes_at(lv)) for lv in range(1, 6)] == [20, 99, 311, 709, 1057]
    assert {"31-33", "44-45", "48-49"} <= set(n.children[None])
    assert n.parent["311"] == "31-33" and n.parent["445"] == "44-45" and n.parent["111110"] == "11111"
    assert n.title["11"] == "Agriculture, Forestry, Fishing and Hunting"  # trailing footnote "T" stripped
    assert n.title["111110"] == "Soybean Farming"
    assert not any(d.startswith("See industry description") or d == "NULL" for d in n.definition.values())
    assert n.definition["11111"] == n.definition["111110"]  # stub resolved to the referenced definition
    assert all(n.level[c] == 5 for c in n.leaves)


def test_sic_counts():
    s = ICS.sic1987()
    assert [len(s.codes_at(lv)) for lv in range(1, 5)] == [10, 83, 416, 1005]
    assert len(s.leaves) == 1005 and all(s.level[c] == 4 for c in s.leaves)
    assert s.path("0111") == ("A", "01", "011", "0111")
    assert s.nearest("3350") == "335" and s.nearest("0111") == "0111" and s.nearest("0000") is None
    assert s.definition == s.title  # titles only
    t = s.truncate(3)
    assert len(t.leaves) == 416 and t.n_levels == 3


def test_crosswalk_delimiter_detected(tmp_path):
    sic_naics = load_crosswalk("sic_to_naics")  # tab-separated despite its .csv name
    assert len(sic_naics) == 1004 and all(len(s) == 4 and n.isdigit() for s, n in sic_naics)
    assert sic_naics[0] == ("0111", "111140")
    naics_sic = load_crosswalk("naics_to_sic")  # comma-separated, many-to-many
    assert len(naics_sic) == 2270 and naics_sic[0] == ("0116", "111110")
    assert read_table(io.StringIO("a|b\n1|2\n")) == [["a", "b"], ["1", "2"]]
    with pytest.raises(ValueError, match="direction='x'"):
        load_crosswalk("x")


def test_firms_counts():
    f = load_firms_2020(drop_empty=False)
    assert len(f) == 2964 and len(set(f.ids)) == 2964
    g18 = ICS.gics("2018")
    assert set(f.gics) <= set(g18.leaves) and len(set(f.gics)) == 154
    bl = load_firms_2020("bloomberg")
    assert len(bl) == 2769 and all(bl.texts)
    anyf = load_firms_2020()
    assert len(anyf) == 2924 and all(anyf.texts)
    sic = ICS.sic1987()
    labelled = [c for c in f.sic if c]
    assert 2000 <= len(labelled) <= 2105 and all(c in sic for c in labelled)
    assert round(f.time, 2) == 2020.71
    sub = anyf.subset([0, 2])
    assert sub.ids == (anyf.ids[0], anyf.ids[2])


def test_sp500_spells_filtered():
    sp = load_sp500_spells()
    g = ICS.gics("2023")
    assert set(sp.codes) <= set(g.leaves)
    assert sp.dropped["short"] == 13 and sp.dropped["unofficial label"] > 0
    assert len(sp) + sum(sp.dropped.values()) == 640
    assert np.all(sp.end >= sp.start) and sp.start.min() >= 2023.2
    # known vandalism: ALB's "Specialty Bust Chemicals" spell is gone, its real label kept
    alb = [c for s, c in zip(sp.symbols, sp.codes, strict=True) if s == "ALB"]
    assert alb and all(g.title[c] == "Specialty Chemicals" for c in alb)
    unfiltered = load_sp500_spells(min_days=0)
    assert unfiltered.dropped["short"] == 0 and len(unfiltered) >= len(sp)
    changed = {s for s in sp.symbols if len({c for s2, c in zip(sp.symbols, sp.codes, strict=True) if s2 == s}) > 1}
    assert len(changed) >= 20


def test_decimal_year():
    assert decimal_year("2020") == 2020.0 and decimal_year(np.datetime64("2021-01-01")) == 2021.0
    assert decimal_year("2024-07") == pytest.approx(2024.497, abs=1e-3)
    with pytest.raises(ValueError, match="when='soon'"):
        decimal_year("soon", "when")
    with pytest.raises(TypeError, match="time should be a year"):
        decimal_year([2020])


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="version='2019'"):
        ICS.gics("2019")
    with pytest.raises(ValueError, match="source='bbg'"):
        load_firms_2020("bbg")
    with pytest.raises(ValueError, match="min_days=-1"):
        load_sp500_spells(min_days=-1)
    g = ICS.gics("2023")
    with pytest.raises(ValueError, match=r"codes\[1\]='99999999' is not a code of GICS 2023"):
        g.check_codes(["10", "99999999"])
    bad = tmp_path / "tree.csv"
    bad.write_text("code,parent,title\n1,,A\n11,9,B\n")
    with pytest.raises(ValueError, match="parent '9' of code '11'"):
        ICS.from_csv(bad)
    with pytest.raises(ValueError, match="no column 'name'"):
        ICS.from_csv(bad, title="name")


def test_from_csv_tab_separated(tmp_path):
    p = tmp_path / "tree.csv"
    p.write_text("code\tparent\ttitle\tdef\n11\t1\tBanks\tTake deposits\n1\t\tFinance\t\n12\t1\tInsurers\t\n")
    t = ICS.from_csv(p, definition="def", level_names=("sector", "industry"), name="toy")
    assert t.codes == ("1", "11", "12") and t.leaves == ("11", "12") and t.children[None] == ("1",)
    assert t.definition["11"] == "Take deposits" and t.definition["12"] == "Insurers"
    assert repr(t) == "ICS('toy', 1/2 nodes by level)"
