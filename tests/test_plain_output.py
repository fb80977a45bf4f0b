"""What the CLI prints keeps what people copy whole, says things in words and never interprets user text:
each run as a user runs it (a subprocess), on a narrow terminal where it matters."""

import csv
import json
import os
import subprocess
import sys

from conftest import ROOT, SAMPLE, run_matcher


def _narrow(*args, columns=40):
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS=str(columns))
    return subprocess.run([sys.executable, "-m", "matcher", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


def test_search_on_a_narrow_terminal_keeps_urls_and_keys_whole(sample_index):
    p = _narrow("search", "--index", str(sample_index), str(SAMPLE / "my-photos"))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    with open(SAMPLE / "manifest.csv", newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    keys = [line.split()[1] for line in lines if line.startswith("     sample-dataset ")]
    assert len(keys) == 12
    for key in keys:  # each copy's URL and page on lines of their own, whole
        assert f"     {rows[key]['url']}" in lines and f"     {rows[key]['page_url']}" in lines
    assert "  1. mirrored — very sure (distance 0, score 0.998)" in lines
    assert "copies by dataset: sample-dataset 12 copies of 7 photos" in lines


def test_optout_list_keeps_the_ids_remove_needs(tmp_path):
    reg = tmp_path / "optout.json"
    run_matcher("optout", "add", "--registry", str(reg), "--workers", "0", "--note", "contact: ada@example.org",
                str(SAMPLE / "my-photos" / "IMG_0001.jpg"), str(SAMPLE / "my-photos" / "IMG_0002.jpg"), check=True)
    ids = [json.loads(line)["id"] for line in run_matcher("optout", "list", "--registry", str(reg), "--json",
                                                          check=True).stdout.splitlines()]
    p = _narrow("optout", "list", "--registry", str(reg), columns=60)
    assert p.returncode == 0
    for i in ids:
        assert any(line.startswith(f"{i} · added ") for line in p.stdout.splitlines()), p.stdout
    assert "2 entries;" in p.stderr
    p = run_matcher("optout", "remove", "--registry", str(reg), "--id", p.stdout.split()[0])  # copied from the list
    assert p.returncode == 0 and "1 entry left" in p.stderr


def test_info_in_words_with_grammar_and_no_failures_said(tmp_path):
    index = tmp_path / "idx"
    photos = tmp_path / "one"
    photos.mkdir()
    (photos / "IMG_0001.jpg").write_bytes((SAMPLE / "my-photos" / "IMG_0001.jpg").read_bytes())
    run_matcher("add", "--index", str(index), str(photos), check=True)
    p = _narrow("info", "--index", str(index), "--failures", columns=80)
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    assert "1 dataset, 1 item: 1 hashed, 0 failed" in text
    assert "hashed with phash version 1: 64 bits (hash_size 8, highfreq_factor 4)" in text
    assert "one 1 item: 1 hashed, 0 failed, 0 dead links; 1 entry" in text
    assert "no failed items: every item was hashed" in text
    assert "{" not in text and "}" not in text  # no raw Python dicts


def test_user_text_is_never_markup_or_emoji(tmp_path, sample_index):
    p = run_matcher("remove", "--index", str(sample_index), "--dataset", ":Netherlands: [bold]x[/bold]")
    assert p.returncode == 2
    assert ":Netherlands: [bold]x[/bold]" in p.stderr  # printed as written: no flag, no markup
    assert "\U0001f1f3" not in p.stderr
