"""Every table cell of two ``report.json`` files (``bnnrobust report`` / ``reproduce --report``):
how many are equal, and each one that differs with both values.

Usage: ``python benchmarks/compare_reports.py OLD/report.json NEW/report.json [--specs S ...]``.
A cell is equal when its per-seed values and the paper's value and ± are; a table or row that
only one side has is listed as differing cell by cell.
"""

from __future__ import annotations

import argparse
import json


def cells(report: dict, specs: list[str] | None) -> dict[tuple[str, str, str, str], tuple]:
    """(spec, table title, model, column) -> (values, paper, pm)."""
    out = {}
    for spec, data in report.items():
        if specs and spec not in specs:
            continue
        for table in data["tables"]:
            for model, row in table["rows"].items():
                for column in table["columns"]:
                    cell = row.get(column)
                    out[(spec, table["title"], model, column)] = None if cell is None else \
                        (tuple(cell["values"]), cell.get("paper"), cell.get("pm"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--specs", nargs="*", help="only these specs (default: all)")
    args = parser.parse_args()
    with open(args.old, encoding="utf-8") as fa, open(args.new, encoding="utf-8") as fb:
        a, b = cells(json.load(fa), args.specs), cells(json.load(fb), args.specs)
    keys = sorted(set(a) | set(b))
    differ = [k for k in keys if a.get(k) != b.get(k)]
    print(f"{len(keys) - len(differ)} cells equal, {len(differ)} differ")
    for key in differ:
        print(" | ".join(key), "|", a.get(key), "->", b.get(key))


if __name__ == "__main__":
    main()
