"""README is the user's manual and docs/ its reference: the library example runs, and every CLI option
that README or docs/*.md show exists; README's links to docs/ lead to files that exist."""

import re
import shutil
import subprocess
import sys

from conftest import ROOT, run_matcher

README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
COMMANDS = ("add", "search", "info", "bench", "remove", "compact", "serve", "lookup", "filter", "duplicates")


def test_library_example_runs_on_the_sample(tmp_path, sample):
    code = re.search(r"```python\n(.*?)```", DOCS["development.md"], re.S).group(1)
    shutil.copytree(sample / "my-photos", tmp_path / "photos")
    shutil.copytree(sample / "dataset", tmp_path / "dataset")
    shutil.copy(sample / "manifest.csv", tmp_path / "manifest.csv")
    (tmp_path / "example.py").write_text(code)
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert len(lines) == 10
    assert "2368127776_6b877559d9_z.jpg" in lines["photos/IMG_0002.jpg"]  # the re-host URL from the manifest
    assert lines["photos/IMG_0007.jpg"] == "[] None"  # the stereo pair is refused


def _named_options(text):
    return re.findall(r"matcher (" + "|".join(COMMANDS + ("optout",)) + r") ([^\n`]*)", text)


def test_cli_options_named_in_readme_and_docs_exist():
    helps = {cmd: run_matcher(cmd, "--help", check=True).stdout for cmd in COMMANDS}
    helps["optout"] = "".join(run_matcher("optout", sub, "--help", check=True).stdout for sub in ("add", "list", "remove"))
    assert {cmd for cmd, _ in _named_options(README)} >= set(COMMANDS) - {"bench"} | {"optout"}
    for source, text in [("README.md", README)] + [(f"docs/{name}", body) for name, body in DOCS.items()]:
        for cmd, opts in _named_options(text):
            for opt in re.findall(r"(--[a-z][a-z-]+)", opts):
                assert opt in helps[cmd], f"{source} shows `matcher {cmd} {opt}` but --help has no {opt}"


def test_readme_is_a_short_manual_whose_links_exist():
    assert len(README.splitlines()) <= 250
    for job in ("Check my photos", "Build a lookup", "Honour opt-outs"):
        assert re.search(rf"^## .*{job}", README, re.M), f"README has no section for the job {job!r}"
    for target in re.findall(r"\]\(((?:docs/)[^)#]+)", README):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
    for name, body in DOCS.items():
        for target in re.findall(r"\]\(([^)#:]+\.(?:md|png))", body):
            assert (ROOT / "docs" / target).resolve().exists(), f"docs/{name} links to {target}, which does not exist"


def test_every_install_line_names_the_distribution():
    for source, text in [("README.md", README)] + [(f"docs/{name}", body) for name, body in DOCS.items()]:
        for line in re.findall(r"pip[x]? install [^\n`]*", text):
            assert not re.search(r"['\s]matcher(\[|'|\s|$)", line), f"{source}: {line!r} installs PyPI's unrelated 'matcher'"
    assert 'name = "photo-dataset-check"' in (ROOT / "pyproject.toml").read_text()
    version = run_matcher("--version", check=True).stdout
    assert re.fullmatch(r"matcher \d+\.\d+\.\d+ \(installed as photo-dataset-check\)\n", version), version
    # the install itself: the distribution is photo-dataset-check, its command is `matcher`
    from importlib import metadata

    dist = metadata.distribution("photo-dataset-check")
    assert [(e.name, e.value) for e in dist.entry_points if e.group == "console_scripts"] == \
        [("matcher", "matcher.cli:main")]
    assert dist.version in version
