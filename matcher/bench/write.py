"""Stage 4 of ``matcher bench``: the report's summary, tables (markdown, terminal), JSON and the sweep plot."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from matcher.bench.common import PDQ_BASELINE, PHASH_BASELINE, _ratio



def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers at the default threshold, next to the baselines."""
    t = report["parameters"]["default_threshold"]
    e = report["engine"]
    ph = report["baselines"]["phash"]["scores"]
    pdq = report["baselines"]["pdq"]["scores"]

    def fam_row(level: str, name: str) -> dict[str, Any]:
        g = e[level][name]
        return {
            "planted": g["planted"],
            "recall": g["recall"][t],
            "false_matches": g["false_matches"][t],
            "precision": g["precision"][t],
            "baseline_phash": ph[level][name]["recall"][0],
            "baseline_pdq": pdq[level][name]["recall"][0],
            "recall_vs_phash": _ratio(g["recall"][t], ph[level][name]["recall"][0]),
            "recall_vs_pdq": _ratio(g["recall"][t], pdq[level][name]["recall"][0]),
        }

    families = {}
    for f in e["family"]:
        row = fam_row("family", f)
        row["target"] = report["targets"].get(f)
        row["meets_target"] = (row["recall"] is not None and row["target"] is not None
                               and row["recall"] >= row["target"])
        families[f] = row
    o = e["overall"]
    return {
        "threshold": t,
        "recall": o["recall"][t],
        "false_matches": o["false_matches"][t],
        "precision": o["precision"][t],
        "false_by_kind": {k: v[t] for k, v in o["false_by_kind"].items()},
        "baseline_phash": {"recall": ph["overall"]["recall"][0], "false_matches": ph["overall"]["false_matches"][0],
                           "precision": ph["overall"]["precision"][0]},
        "baseline_pdq": {"recall": pdq["overall"]["recall"][0], "false_matches": pdq["overall"]["false_matches"][0],
                         "precision": pdq["overall"]["precision"][0]},
        "recall_vs_phash": _ratio(o["recall"][t], ph["overall"]["recall"][0]),
        "recall_vs_pdq": _ratio(o["recall"][t], pdq["overall"]["recall"][0]),
        "recall_searchable": e["subset"]["searchable"]["recall"][t],
        "baseline_phash_searchable": ph["subset"]["searchable"]["recall"][0],
        "baseline_pdq_searchable": pdq["subset"]["searchable"]["recall"][0],
        "families": families,
        "transforms": {n: fam_row("transform", n) for n in e["transform"]},
        "families_below_target": [f for f, r in families.items() if not r["meets_target"]],
    }


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the summary table: each transform, then each family, then all copies and false matches."""
    s = report["summary"]
    fam_of = report["transform_family"]
    rows = []
    for name, r in s["transforms"].items():
        f = fam_of[name]
        rows.append({"transform": name, "family": f, "target": report["targets"].get(f), "recall": r["recall"],
                     "phash": r["baseline_phash"], "pdq": r["baseline_pdq"], "planted": r["planted"],
                     "kind": "transform"})
    for f, r in s["families"].items():
        rows.append({"transform": "(all)", "family": f, "target": r["target"], "recall": r["recall"],
                     "phash": r["baseline_phash"], "pdq": r["baseline_pdq"], "planted": r["planted"],
                     "kind": "family"})
    rows.append({"transform": "(all)", "family": "(all)", "target": None, "recall": s["recall"],
                 "phash": s["baseline_phash"]["recall"], "pdq": s["baseline_pdq"]["recall"],
                 "planted": report["engine"]["overall"]["planted"], "kind": "overall"})
    return rows


def markdown_table(report: dict[str, Any]) -> str:
    t = report["summary"]["threshold"]
    lines = [
        f"| transform | family | target | recall (t<={t}) | baseline phash<=10 | baseline PDQ<=31 |",
        "|---|---|---|---|---|---|",
    ]
    for r in table_rows(report):
        bold = "**" if r["kind"] != "transform" else ""
        miss = " ✗" if r["target"] is not None and r["recall"] is not None and r["recall"] < r["target"] else ""
        lines.append(
            f"| {bold}{r['transform']}{bold} | {bold}{r['family']}{bold} | "
            f"{'' if r['target'] is None else _pct(r['target'])} | {bold}{_pct(r['recall'])}{bold}{miss} | "
            f"{_pct(r['phash'])} | {_pct(r['pdq'])} |"
        )
    s = report["summary"]
    lines.append(f"| **false matches** | | | {s['false_matches']} | {s['baseline_phash']['false_matches']} | "
                 f"{s['baseline_pdq']['false_matches']} |")
    lines.append(f"| **precision** | | | {_pct(s['precision'])} | {_pct(s['baseline_phash']['precision'])} | "
                 f"{_pct(s['baseline_pdq']['precision'])} |")
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: str | os.PathLike) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


def write_markdown(report: dict[str, Any], path: str | os.PathLike) -> None:
    p, c, s, tm = report["parameters"], report["counts"], report["summary"], report["timing"]
    cost, ir = report["cost"], report["index_recall"]
    m = report["machine"]
    o = report["engine"]["overall"]
    t = s["threshold"]
    roles = o["queries_with_false_match_by_role"]
    lines = [
        "# matcher bench",
        "",
        f"{report['created_at']} · seed {p['seed']} · matcher {m['matcher']} · {m['cpu']}, {m['cpus']} cpus, "
        f"Python {m['python']}",
        "",
        f"Photos: {p['photos_dir']} ({c['originals']} originals: {c['members']} with copies planted, "
        f"{c['non_members']} held out as non-members); faces: {c['faces']}; same-scene pairs: "
        f"{c['same_scene_pairs']}; distractors: {c['distractors']}. Copies: {c['copies']}. "
        f"Index: {c['index_items_added']} items added, {c['index_items_failed']} failed"
        + (f" ({', '.join(f'{k}: {v}' for k, v in c['index_failures'].items())})" if c["index_failures"] else "")
        + f". Queries: {c['queries']} ({', '.join(f'{k}: {v}' for k, v in c['queries_by_role'].items())}), "
        f"{len(report['errors']['query_errors'])} unreadable.",
        "",
        f"Recall = fraction of planted copies whose own photo finds them at 64-bit distance <= {t} "
        "(the default), after the engine's own verification at its defaults ("
        + ", ".join(f"{k}={v}" for k, v in p["engine_settings"].items()) + "). "
        "Baselines: brute force over the same files.",
        "",
        markdown_table(report),
        f"{c['copies_of_refused_photos']} copies belong to photos the engine refused to hash (see errors in "
        f"report.json); they count as missed. Over the other copies: recall {_pct(s['recall_searchable'])} "
        f"(phash {_pct(s['baseline_phash_searchable'])}, PDQ {_pct(s['baseline_pdq_searchable'])})."
        if c["copies_of_refused_photos"] else "",
        "",
        "## False matches at the default threshold",
        "",
        f"- engine: {s['false_matches']} ("
        + (", ".join(f"{k}: {v}" for k, v in s["false_by_kind"].items()) or "none") + ")"
        + ("; copy-of-lookalike-photo = a copy of another photo of this corpus that is itself within PDQ<=31 of "
           f"the query ({c['lookalike_photo_pairs']} such pairs of photos)" if c["lookalike_photo_pairs"] else ""),
        f"- non-member photos with any match: {roles.get('non-member', {}).get('with_false_match', [0] * (t + 1))[t]}"
        f" of {roles.get('non-member', {}).get('queries', 0)}",
        f"- same-scene a's matching their b: {o['same_scene_partner_matched'][t]} of {c['same_scene_pairs']}",
        f"- baseline phash<=10: {s['baseline_phash']['false_matches']}; PDQ<=31: {s['baseline_pdq']['false_matches']}",
        "",
        "## Cost",
        "",
        f"- entries per dataset image: {cost['entries_per_image']} ({cost['entries']} entries for "
        f"{cost['items_hashed']} images; by kind: {', '.join(f'{k}: {v}' for k, v in cost['entries_by_kind'].items())})",
        f"- index bytes per image: {cost['index_bytes_per_image']} ({cost['index_bytes']:,} bytes: "
        + ", ".join(f"{k} {v:,}" for k, v in cost["index_files"].items()) + ")",
        f"- search: {tm['search_s']} s for {tm['queries']} photos = {tm['search_per_photo_ms']} ms per photo "
        f"(batch, {p['workers']} workers, threshold {p['sweep_max']})",
        f"- single photo (in-process, threshold {tm['single_photo']['threshold']}, n={tm['single_photo']['n']}): "
        f"p50 {tm['single_photo']['p50_ms']} ms, p95 {tm['single_photo']['p95_ms']} ms",
        f"- index ({ir.get('index_type')}) recall against an exact scan: "
        + (f"{ir['recall_default']:.4f} at t<={t} ({ir['pairs_exact_default']} pairs), "
           f"{ir['recall_sweep_max']:.4f} at t<={p['sweep_max']} ({ir['pairs_exact_sweep_max']} pairs)"
           if "recall_default" in ir else f"{ir.get('recall')}: {ir.get('method')}. {ir.get('why', '')}"),
        f"- run: {tm['total_s']} s in all (copies {tm['copies_s']} s, index {tm['index_s']} s, "
        f"search {tm['search_s']} s)",
        "",
        "![threshold sweep](sweep.png)",
        "",
    ]
    Path(path).write_text(re.sub(r"\n{3,}", "\n\n", "\n".join(lines)))


def plot_sweep(report: dict[str, Any], path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = report["engine"]
    ts = e["thresholds"]
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for f, g in e["family"].items():
        ys = [np.nan if y is None else y for y in g["recall"]]
        ax.plot(ts, ys, marker="o", ms=3, label=f"{f} (n={g['planted']})")
    ax.set_xlabel("64-bit pHash threshold (Hamming, inclusive)")
    ax.set_ylabel("recall of planted copies")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(ts[0], ts[-1])
    ax.grid(alpha=0.3)
    default = report["parameters"]["default_threshold"]
    ax.axvline(default, color="grey", ls=":", lw=1.5, label=f"default threshold ({default})")
    ax2 = ax.twinx()
    fm = e["overall"]["false_matches"]
    ax2.plot(ts, fm, color="black", ls="--", marker="x", ms=4, lw=1.2, label="false matches (right)")
    ax2.set_yscale("symlog", linthresh=1)
    ax2.set_ylim(0, max(10, max(fm) * 3))
    ax2.set_ylabel("false matches (symlog)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
    c = report["counts"]
    ax.set_title(f"matcher bench: {c['copies']} copies, {c['distractors']} distractors, {c['queries']} queries, "
                 f"seed {report['parameters']['seed']}", fontsize=10)
    fig.tight_layout()
    from matcher.outputs import PNG_SOFTWARE

    fig.savefig(path, metadata={"Software": PNG_SOFTWARE})
    plt.close(fig)


def write_reports(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "plot": out / "sweep.png"}
    write_json(report, paths["json"])
    write_markdown(report, paths["markdown"])
    plot_sweep(report, paths["plot"])
    return paths


def print_table(report: dict[str, Any], console=None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    s = report["summary"]
    t = s["threshold"]
    table = Table(title=f"recall of planted copies at the default threshold (distance <= {t}); baselines: "
                        f"imagehash pHash <= {PHASH_BASELINE}, PDQ <= {PDQ_BASELINE}",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("transform", "family", "target", "n", "recall", "pHash", "PDQ"):
        table.add_column(col, justify="left" if col in ("transform", "family") else "right", no_wrap=True)
    prev = None
    for r in table_rows(report):
        if prev == "transform" and r["kind"] != "transform":
            table.add_section()
        prev = r["kind"]
        miss = r["target"] is not None and r["recall"] is not None and r["recall"] < r["target"]
        rec = _pct(r["recall"])
        rec = f"[red]{rec}[/]" if miss else (f"[green]{rec}[/]" if r["target"] is not None else rec)
        style = "bold" if r["kind"] != "transform" else None
        table.add_row(r["transform"], r["family"], "" if r["target"] is None else _pct(r["target"]),
                      str(r["planted"]), rec, _pct(r["phash"]), _pct(r["pdq"]), style=style)
    table.add_section()
    table.add_row("false matches", "", "", "", str(s["false_matches"]), str(s["baseline_phash"]["false_matches"]),
                  str(s["baseline_pdq"]["false_matches"]))
    table.add_row("precision", "", "", "", _pct(s["precision"]), _pct(s["baseline_phash"]["precision"]),
                  _pct(s["baseline_pdq"]["precision"]))
    console.print(table)
    tm, cost = report["timing"], report["cost"]
    ir = report["index_recall"]
    console.print(
        f"search {tm['search_per_photo_ms']} ms/photo (batch), single photo p50 {tm['single_photo']['p50_ms']} ms "
        f"p95 {tm['single_photo']['p95_ms']} ms; {cost['entries_per_image']} entries and "
        f"{cost['index_bytes_per_image']} bytes per dataset image; index recall vs exact scan "
        f"{ir.get('recall')}; run {tm['total_s']} s",
        highlight=False,
    )
