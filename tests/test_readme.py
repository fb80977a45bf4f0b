"""README is the user's manual: its library example runs, and the CLI options it names exist."""

import re
import shutil
import subprocess
import sys

from conftest import ROOT, run_matcher

README = (ROOT / "README.md").read_text()


def test_library_example_runs_on_the_sample(tmp_path, sample):
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
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


def test_cli_options_named_in_readme_exist():
    commands = ("add", "search", "info", "bench", "remove", "compact", "serve", "lookup", "filter", "duplicates")
    helps = {cmd: run_matcher(cmd, "--help", check=True).stdout for cmd in commands}
    helps["optout"] = "".join(run_matcher("optout", sub, "--help", check=True).stdout for sub in ("add", "list", "remove"))
    named = re.findall(r"matcher (" + "|".join(commands + ("optout",)) + r") ([^\n`]*)", README)
    assert {cmd for cmd, _ in named} >= set(commands) - {"bench"} | {"optout"}
    for cmd, opts in named:
        for opt in re.findall(r"(--[a-z][a-z-]+)", opts):
            assert opt in helps[cmd], f"README shows `matcher {cmd} {opt}` but --help has no {opt}"
