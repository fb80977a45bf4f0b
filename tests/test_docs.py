"""docs/library.md is kept honest like the README: its example runs on the sample."""

import re
import shutil
import subprocess
import sys

from conftest import ROOT


def test_library_page_example_runs_on_the_sample(tmp_path, sample):
    code = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "library.md").read_text(), re.S).group(1)
    shutil.copytree(sample / "my-photos", tmp_path / "photos")
    shutil.copytree(sample / "dataset", tmp_path / "dataset")
    shutil.copy(sample / "manifest.csv", tmp_path / "manifest.csv")
    (tmp_path / "example.py").write_text(code)
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert len(lines) == 10
    assert "2368127776_6b877559d9_z.jpg" in lines["photos/IMG_0002.jpg"]
    assert lines["photos/IMG_0007.jpg"] == "[] None"
