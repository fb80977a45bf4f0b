"""The one guard every file matcher writes for a user goes through: never destroy a user's file.

A command that writes a file the user named (``--html``, ``--out``, ``--log``, ``--letters``, ``bench --out``,
an opt-out ``--registry``) asks :func:`check_output` (or :func:`check_output_dir` for a folder of files)
before it does any work. The answer is a :class:`~matcher.errors.OutputRefused` that says what to do, or
nothing. The rules, in order:

1. a folder where a file is wanted (or a file where a folder is wanted) is refused;
2. one of the same command's inputs (a photo, a manifest, a registry, the index, another output), or an
   existing file inside an input folder (a photo folder, the index), is never replaced, not even with ``--force``;
3. a photo is never replaced, nor is a report written under a photo's name (``--html IMG_0001.jpg``, the
   file name after ``--html`` forgotten and the shell's ``*.jpg`` taking its place), not even with ``--force``;
4. an existing file (other than an empty one) is replaced only when matcher wrote it (each writer says how its files start: a
   ``<meta name="generator" content="matcher">``, a CSV header of its own, a registry's format name) or
   with ``--force``.

The guard reads at most the first 8 KB of an existing file and writes nothing itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from matcher.errors import OutputRefused

__all__ = ["Output", "check_output", "check_output_dir", "looks_like_image", "HTML_GENERATOR", "PNG_SOFTWARE"]

#: what matcher's HTML reports carry in their <head>; a report with it may be replaced without --force
HTML_GENERATOR = '<meta name="generator" content="matcher">'
#: the PNG tEXt "Software" value of the images matcher draws (bench's sweep.png)
PNG_SOFTWARE = "matcher bench"

IMAGE_SUFFIXES = frozenset(
    ".jpg .jpeg .jpe .jfif .png .apng .gif .webp .avif .heic .heif .tif .tiff .bmp .dib .ico .jp2 .j2k .jxl "
    ".ppm .pgm .pbm .pnm .tga .psd .dng .cr2 .nef .arw .orf .rw2 .raf .svg".split()
)
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
                b"\x00\x00\x00\x0cjP  ", b"\xff\x0a", b"8BPS")
_HEAD = 8192


@dataclass(frozen=True)
class Output:
    """One file a command will write: ``what`` it is (for messages: "the HTML report"), the ``option`` that
    named it, and the ``signatures`` (text) one of which the start of a file matcher wrote holds. ``image``:
    the output is itself an image (bench's plot), so a new file may have an image's name."""

    path: Path
    what: str
    option: str
    signatures: tuple[str, ...] = ()
    image: bool = False


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_HEAD)
    except OSError:
        return b""


def looks_like_image(path: str | os.PathLike, head: bytes | None = None) -> bool:
    """A photo by its name (the suffix) or, for an existing file, by its first bytes."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    head = _head(path) if head is None and path.is_file() else (head or b"")
    if head.startswith(_IMAGE_MAGIC):
        return True
    return head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis") or (
        head.startswith(b"RIFF") and head[8:12] == b"WEBP")


def _empty(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size == 0
    except OSError:
        return False


def _written_by_matcher(head: bytes, signatures: Sequence[str]) -> bool:
    return any(s.encode("utf-8") in head for s in signatures)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return folder.is_dir() and path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def check_output(out: Output, *, inputs: Iterable[str | os.PathLike] = (), force: bool = False) -> None:
    """Raise :class:`OutputRefused` unless ``out.path`` may be written (see the module's rules)."""
    path, name = out.path, f"{out.option} {out.path}"
    if path.is_dir():
        raise OutputRefused(f"{name}: is a folder; {out.option} wants a file name for {out.what}")
    for given in inputs:
        if _same(path, Path(given)):
            raise OutputRefused(f"{name}: is one of this command's inputs; {out.what} was not written "
                                f"and the file is untouched. Give {out.option} a new file name")
    head = _head(path) if path.is_file() else b""
    ours = path.is_file() and _written_by_matcher(head, out.signatures)
    inside = next((Path(g) for g in inputs if _inside(path, Path(g))), None)
    if path.exists() and not ours and not _empty(path) and inside is not None:
        raise OutputRefused(f"{name}: is a file inside {inside}, one of this command's inputs (a photo folder or an "
                            f"index); it is never replaced. Give {out.option} a new file name")
    if not ours and looks_like_image(path, head) and not (out.image and not path.exists()):
        raise OutputRefused(f"{name}: is a photo's name; matcher never writes {out.what} over or as a photo "
                            f"(was a file name after {out.option} forgotten?). Give {out.option} a name such as "
                            f"{_example(out)}")
    if path.exists() and not ours and not force and not _empty(path):
        raise OutputRefused(f"{name}: the file exists and matcher did not write it; nothing was written. "
                            f"Give {out.option} a new file name, or add --force to replace it")


def check_output_dir(folder: str | os.PathLike, outputs: Sequence[Output], *, option: str, what: str,
                     inputs: Iterable[str | os.PathLike] = (), force: bool = False) -> None:
    """A folder of output files: not an existing file, not one of the inputs (nor inside or around one),
    and each of ``outputs`` (inside it) passes :func:`check_output`."""
    folder = Path(folder)
    inputs = [Path(p) for p in inputs]
    if folder.exists() and not folder.is_dir():
        raise OutputRefused(f"{option} {folder}: is a file; {option} wants a folder for {what}")
    for given in inputs:
        if _same(folder, given) or _inside(folder, given) or _inside(given, folder):
            raise OutputRefused(f"{option} {folder}: holds or is inside this command's input {given}; {what} "
                                f"would be written among them. Give {option} a folder of its own")
    for out in outputs:
        check_output(out, inputs=inputs, force=force)


def _example(out: Output) -> str:
    return {"--html": "report.html", "--log": "dropped.csv", "--registry": "my-optout.json"}.get(
        out.option, "results.csv")
