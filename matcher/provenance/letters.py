"""Removal-request letters: one per dataset, listing every matched image URL one per line.

IBM removed a photo from its Diversity in Faces dataset only when sent a link to each photo; this
module turns matches into the letters a person sends, for the CLI (``matcher search --letters``) and
the web server (``POST /api/v1/letters``) alike.

* :data:`TEMPLATES` - ``list`` (a plain removal request), ``gdpr`` (an erasure request under
  Article 17 GDPR, with an Article 15 access request), ``bipa`` (a notice under the Illinois
  Biometric Information Privacy Act, 740 ILCS 14);
* :func:`build_letters` - matches (or items) -> one :class:`Letter` per dataset, no I/O;
* :func:`write_letters` - the letters into a folder, each written atomically.

In every letter the image URLs stand alone, one per line, so the block can be pasted as is. Dataset
metadata is scraped and untrusted: names and URLs are stripped of control characters before they
reach a letter (a newline in a URL would otherwise split it), and file names are derived so that no
dataset name can place a file outside the folder or hide it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import textwrap
import unicodedata
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from matcher.atomic import fsync_dir
from matcher.results import Item, Match

__all__ = ["SIGNATURE", "TEMPLATES", "REQUESTER_FIELDS", "Letter", "build_letters", "write_letters"]

#: The letter templates, in the order the CLI writes them.
TEMPLATES = ("list", "gdpr", "bipa")

#: Fields a requester may give, and what stands in the letter when one is missing.
REQUESTER_FIELDS = {
    "name": "[YOUR NAME]",
    "email": "[YOUR EMAIL ADDRESS]",
    "address": "[YOUR POSTAL ADDRESS]",
    "country": "[YOUR COUNTRY]",
    "flickr_user": "[YOUR FLICKR USERNAME, IF THE PHOTOS WERE POSTED THERE; OTHERWISE DELETE THIS LINE]",
}

#: How every match was found (said at the end of each letter).
METHOD = "matched by content with matcher: perceptual hash + pixel verification"

_WIDTH = 78
#: how every letter file starts (a letter file with it may be replaced by a new one)
SIGNATURE = "[TEMPLATE, NOT LEGAL ADVICE:"
_NOT_ADVICE = ("[TEMPLATE, NOT LEGAL ADVICE: check that it fits your situation, fill in the bracketed fields "
               "and delete this line before sending.]")


@dataclass
class Letter:
    """One letter: to the maintainers of ``dataset``, from ``template``, to be saved as ``filename``."""

    dataset: str
    template: str
    filename: str
    text: str


@dataclass
class _Entry:
    """One dataset item in a letter, with its best evidence when it came from a Match."""

    item: Item
    distance: int | None = None
    score: float | None = None


# --------------------------------------------------------------------------- building

def build_letters(matches: Iterable[Match | Item], template: str = "list", requester: dict[str, Any] | None = None,
                  *, today: date | str | None = None) -> list[Letter]:
    """One letter per dataset (sorted by dataset name) for ``matches``: :class:`Match` or :class:`Item`
    objects, mixed freely.

    An item matched several times (by several photos) is listed once, with its smallest distance.
    ``requester`` may give ``name``, ``email``, ``address``, ``country`` and ``flickr_user`` (any other
    key is a ``ValueError``); missing or empty fields become bracketed placeholders such as
    ``[YOUR NAME]``. ``today`` (a date or a string) is the letter's date; default: today.
    No matches give no letters.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown letter template {template!r}; known: {', '.join(TEMPLATES)}")
    who = _requester(requester)
    when = today.isoformat() if isinstance(today, date) else (str(today) if today is not None else date.today().isoformat())
    per_dataset: dict[str, dict[tuple[str, str], _Entry]] = {}
    for m in matches:
        if isinstance(m, Match):
            item, distance = m.item, m.distance
            score = m.evidence.get("score") if isinstance(m.evidence, dict) else None
            score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None
        elif isinstance(m, Item):
            item, distance, score = m, None, None
        else:
            raise TypeError(f"expected Match or Item, got {type(m).__name__}")
        entries = per_dataset.setdefault(item.dataset, {})
        ident = (item.dataset, item.key)
        old = entries.get(ident)
        if old is None:
            entries[ident] = _Entry(item, distance, score)
        elif distance is not None and (old.distance is None or (distance, -(score or 0.0)) < (old.distance, -(old.score or 0.0))):
            old.distance, old.score = distance, score
    names = _filenames(sorted(per_dataset), template)
    return [
        Letter(dataset=ds, template=template, filename=names[ds],
               text=_letter(template, ds, list(per_dataset[ds].values()), who, when))
        for ds in sorted(per_dataset)
    ]


def _requester(requester: dict[str, Any] | None) -> dict[str, str]:
    requester = dict(requester or {})
    unknown = sorted(set(requester) - set(REQUESTER_FIELDS), key=str)
    if unknown:
        raise ValueError(f"unknown requester field(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(REQUESTER_FIELDS)}")
    out = {}
    for k, placeholder in REQUESTER_FIELDS.items():
        v = requester.get(k)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"requester field {k!r} must be a string, got {type(v).__name__}")
        v = _clean(v or "", keep_newlines=(k == "address"))
        out[k] = v if v else placeholder
    return out


def _clean(text: str, keep_newlines: bool = False) -> str:
    """Untrusted text for a letter: control and format characters become spaces (newlines kept in
    multi-line fields), runs of spaces collapse, and the ends are stripped."""
    lines = text.splitlines() if keep_newlines else [text]
    out = []
    for line in lines:
        line = "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in line)
        line = re.sub(r" {2,}", " ", line).strip()
        if line:
            out.append(line)
    return "\n".join(out)


def _clean_url(url: str | None) -> str | None:
    """A URL on a line of its own: whitespace and control characters percent-encoded (a browser does
    the same), so the URL can neither break its line nor be cut at a space."""
    if url is None:
        return None
    url = url.strip()
    if not url:
        return None
    return "".join(quote(c, safe="") if unicodedata.category(c)[0] in "CZ" else c for c in url)


def _is_url(text: str) -> bool:
    return bool(re.match(r"(?i)^[a-z][a-z0-9+.-]*://", text))


# --------------------------------------------------------------------------- file names

def _slug(dataset: str) -> str:
    """A file-name stem for a dataset: lower-case ASCII letters, digits, '-', '_' and '.', never
    empty, never starting with '.' or '-', never ending with '.'; a short hash of the name is added
    whenever the stem had to differ from the name, so that different names never share a stem
    (even on case-insensitive file systems)."""
    ascii_name = unicodedata.normalize("NFKD", dataset).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^a-z0-9._-]+", "-", ascii_name.lower())
    stem = re.sub(r"\.{2,}", ".", stem)
    stem = re.sub(r"-{2,}", "-", stem).strip(".-_")[:60].rstrip(".-_")
    if stem != dataset or not stem:
        digest = hashlib.sha256(dataset.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        stem = f"{stem}-{digest}" if stem else f"dataset-{digest}"
    return stem


def _filenames(datasets: list[str], template: str) -> dict[str, str]:
    names = {ds: f"{_slug(ds)}-{template}.txt" for ds in datasets}
    seen: dict[str, str] = {}
    for ds, name in names.items():
        if name.lower() in seen:  # cannot happen short of a hash collision: refuse rather than overwrite
            raise ValueError(f"datasets {seen[name.lower()]!r} and {ds!r} would share the file name {name!r}")
        seen[name.lower()] = ds
    return names


def _safe_filename(name: str) -> bool:
    return (bool(name) and name not in (".", "..") and not name.startswith((".", "-"))
            and "/" not in name and "\\" not in name and "\x00" not in name and os.sep not in name
            and (os.altsep is None or os.altsep not in name) and len(name.encode("utf-8", "replace")) <= 255)


# --------------------------------------------------------------------------- text

#: Citations kept on one line when a paragraph is wrapped ("740 ILCS 14/15(b)", "Article 17(1)").
_UNBREAKABLE = re.compile(r"740 ILCS \S+|Articles? \S+")
_GLUE = "\x00"


def _wrap(text: str, initial: str = "", subsequent: str = "") -> str:
    glued = _UNBREAKABLE.sub(lambda m: m.group(0).replace(" ", _GLUE), text.replace(_GLUE, " "))
    return textwrap.fill(glued, _WIDTH, initial_indent=initial, subsequent_indent=subsequent,
                         break_long_words=False, break_on_hyphens=False).replace(_GLUE, " ")


def _fill(text: str) -> str:
    return _wrap(text)


def _bullets(items: list[str]) -> str:
    return "\n".join(_wrap(s, "- ", "  ") for s in items)


def _numbered(items: list[str]) -> str:
    return "\n".join(_wrap(s, f"{i}. ", "   ") for i, s in enumerate(items, 1))


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _image_lists(entries: list[_Entry]) -> tuple[list[str], list[str], list[str], list[_Entry]]:
    """(image URLs, page URLs, keys of items without an image URL, entries in list order)."""
    with_url = sorted((e for e in entries if _clean_url(e.item.url)), key=lambda e: (_clean_url(e.item.url), e.item.key))
    without = sorted((e for e in entries if not _clean_url(e.item.url)), key=lambda e: e.item.key)
    urls = list(dict.fromkeys(_clean_url(e.item.url) for e in with_url))
    pages = list(dict.fromkeys(p for e in with_url + without if (p := _clean_url(e.item.page_url)) and p not in urls))
    keys = list(dict.fromkeys(_clean(e.item.key) or "(empty key)" for e in without))
    return urls, pages, keys, with_url + without


def _list_block(dataset: str, entries: list[_Entry]) -> str:
    urls, pages, keys, _ = _image_lists(entries)
    parts = []
    if urls:
        head = (f"The image's URL in the \"{dataset}\" dataset:" if len(urls) == 1 else
                f"The {len(urls):,} image URLs in the \"{dataset}\" dataset, one per line:")
        parts.append(_fill(head) + "\n\n" + "\n".join(urls))
    if pages:
        head = ("The page where the image was published:" if len(pages) == 1 else
                "The pages where the images were published, one per line:")
        parts.append(head + "\n\n" + "\n".join(pages))
    if keys:
        parts.append(_fill(f"{'This image has' if len(keys) == 1 else 'These images have'} no URL in the "
                           f"dataset as I found it; {'it is' if len(keys) == 1 else 'they are'} identified by "
                           f"{'its key' if len(keys) == 1 else 'their keys'} in the dataset, one per line:")
                     + "\n\n" + "\n".join(keys))
    return "\n\n".join(parts)


def _evidence(dataset: str, entries: list[_Entry]) -> str:
    urls, _, _, ordered = _image_lists(entries)
    number = {url: i for i, url in enumerate(urls, 1)}
    n = len(entries)
    head = _fill(f"This request covers {_plural(n, 'image')} of the \"{dataset}\" dataset, {METHOD} (each of "
                 f"my photos was compared with the dataset's images by a 64-bit perceptual hash, and every "
                 f"candidate was then checked pixel by pixel).")
    lines = []
    for e in ordered:
        if e.distance is None:
            continue
        key = _clean(e.item.key)
        url = _clean_url(e.item.url)
        useful_key = key and not _is_url(key) and key != url
        if url in number:
            ref = f"image {number[url]}" + (f" (key {key})" if useful_key else "")
        else:
            ref = f"key {key}" if key else "an image without a key"
        detail = f"hash distance {e.distance}/64"
        if e.score is not None:
            detail += f", verification score {e.score:.3f}"
        lines.append(f"{ref}: {detail}")
    if not lines:
        return head
    return (head + "\n\n" + _fill("Match evidence per image, numbered as in the list of URLs (hash distance: "
                                  "bits that differ, out of 64; verification score: 1 = identical pixels):")
            + "\n" + _bullets(lines))


def _reserved(entries: list[_Entry]) -> list[str]:
    """A paragraph quoting the machine-readable reservations the dataset kept images despite (none: [])."""
    from matcher.provenance.reservations.records import from_extra

    urls, _, _, ordered = _image_lists(entries)
    number = {url: i for i, url in enumerate(urls, 1)}
    lines, refs = [], set()
    for e in ordered:
        found = from_extra(e.item.extra).reservations
        if not found:
            continue
        url = _clean_url(e.item.url)
        ref = f"image {number[url]}" if url in number else f"key {_clean(e.item.key) or '(empty)'}"
        refs.add(ref)
        lines += [f"{ref}: {_clean(r.says())}" for r in found]
    if not lines:
        return []
    n = len(refs)
    return [_fill(f"The dataset kept {_plural(n, 'image')} although {'it' if n == 1 else 'each'} carried a "
                  "machine-readable reservation of text and data mining and AI training (Article 4(3) of "
                  "Directive (EU) 2019/790), found when the dataset's copy was read:") + "\n" + _bullets(lines)]


def _contact(who: dict[str, str]) -> str:
    flickr = who["flickr_user"]
    if flickr != REQUESTER_FIELDS["flickr_user"]:
        flickr = f"Flickr account: {flickr}"
    return "\n".join([who["name"], who["address"], who["country"], who["email"], flickr])


def _letter(template: str, dataset: str, entries: list[_Entry], who: dict[str, str], when: str) -> str:
    ds = _clean(dataset) or "(unnamed)"
    body = {"list": _body_list, "gdpr": _body_gdpr, "bipa": _body_bipa}[template](ds, entries)
    parts = [
        _fill(_NOT_ADVICE),
        _contact(who),
        when,
        f"To: the maintainers of the \"{ds}\" dataset\n[THE MAINTAINERS' NAME AND POSTAL OR EMAIL ADDRESS]",
        body,
        *_reserved(entries),
        f"Sincerely,\n\n{who['name']}",
        "--\n" + _evidence(ds, entries),
    ]
    return "\n\n".join(parts) + "\n"


def _body_list(ds: str, entries: list[_Entry]) -> str:
    return "\n\n".join([
        f"Subject: Please remove my photos from the \"{ds}\" dataset",
        "Dear maintainers,",
        _fill(f"I am [the photographer of / a person shown in] the images listed below, which are part of the "
              f"\"{ds}\" dataset. I did not agree to their use in this dataset, and I ask you to remove them."),
        _list_block(ds, entries),
        _fill("Please remove each of these images from the dataset, and from every copy of it that you host "
              "or distribute (downloads, mirrors, archives, and the lists of URLs or identifiers that make up "
              "the dataset), and leave them out of any future version. Where possible, please also remove "
              "them, and anything derived from them (face measurements, embeddings, annotations), from the "
              "models trained on the dataset and from the data derived from it."),
        _fill("Please confirm in writing once the images have been removed, and tell me which copies or "
              "models you could not remove them from, and why."),
    ])


def _body_gdpr(ds: str, entries: list[_Entry]) -> str:
    return "\n\n".join([
        f"Subject: Request for erasure under Article 17 GDPR: my images in the \"{ds}\" dataset",
        "Dear maintainers, dear data protection officer,",
        _fill(f"I am writing to exercise my right to erasure (\"right to be forgotten\") under Article 17 of "
              f"the General Data Protection Regulation (EU) 2016/679 (\"GDPR\"; the UK GDPR has the same "
              f"articles). The \"{ds}\" dataset that you maintain contains the images listed below. They are "
              f"my personal data: [they show me / they are my photos and identify me as their author]."),
        _list_block(ds, entries),
        _fill("Please erase these images without undue delay, together with all personal data you derived "
              "from them or hold with them (face measurements or landmarks, embeddings, annotations, and "
              "metadata such as my name or user name), from the dataset and from every copy of it that you "
              "hold. I rely on the following grounds of Article 17(1) GDPR:"),
        _bullets([
            "Article 17(1)(b): to the extent that the processing is based on consent (Article 6(1)(a) or "
            "Article 9(2)(a)), I withdraw it, as Article 7(3) entitles me to do at any time;",
            "Article 17(1)(c): to the extent that the processing is based on legitimate interests or on a "
            "task in the public interest (Article 6(1)(f) or (e)), I object to it under Article 21(1). I did "
            "not expect my images to be collected into a dataset for training AI models and do not want them "
            "used that way, and I know of no compelling legitimate grounds that override my interests;",
            "Article 17(1)(d): the images were collected without my knowledge, and I was never given the "
            "information Article 14 requires when personal data are not obtained from the person concerned. "
            "Where images of faces are processed to identify or compare people, they are biometric data "
            "(Article 9(1)), which may not be processed without my explicit consent or another exception of "
            "Article 9(2). The processing is therefore unlawful.",
        ]),
        _fill("Removing these images does not render impossible or seriously impair the purposes of the "
              "dataset, so the research exemption of Article 17(3)(d) does not apply."),
        _fill("As the dataset has been made public, please also take reasonable steps, including technical "
              "measures, to inform the other controllers who process it (those who downloaded or mirror it) "
              "that I have requested the erasure of any links to, copies or replications of these images "
              "(Article 17(2)), and tell me to whom you have disclosed them (Article 19)."),
        _fill("Under Article 15 GDPR (right of access), please also confirm whether you process any other "
              "personal data concerning me and, if so, give me a copy of it, with the purposes of the "
              "processing, the recipients to whom it has been disclosed, how long it will be stored, and any "
              "available information on where it was obtained (Article 15(1)(g))."),
        _fill("Under Article 12(3) GDPR you must answer without undue delay and in any event within one month "
              "of receiving this request; that period may be extended by two further months only where "
              "necessary, in which case you must tell me so within the first month, with the reasons. Please "
              "confirm in writing when the erasure is complete. If you need information to confirm my "
              "identity, please tell me what you need (Article 12(6)). If you do not act on this request, I "
              "may lodge a complaint with a supervisory authority (Article 77)."),
    ])


def _body_bipa(ds: str, entries: list[_Entry]) -> str:
    return "\n\n".join([
        f"Subject: Notice under the Illinois Biometric Information Privacy Act (740 ILCS 14): my images in "
        f"the \"{ds}\" dataset",
        "Dear maintainers,",
        _fill(f"I am an Illinois resident [CHECK: the Act protects people whose biometric identifiers were "
              f"collected in Illinois]. The \"{ds}\" dataset that you maintain contains the images listed "
              f"below, which show my face."),
        _list_block(ds, entries),
        _fill("Under the Biometric Information Privacy Act, 740 ILCS 14 (\"BIPA\"), a scan of face geometry is "
              "a biometric identifier, and any information based on it that is used to identify a person is "
              "biometric information (740 ILCS 14/10). Photographs themselves are not biometric identifiers; "
              "the face geometry, landmarks, measurements, templates and embeddings computed from them are. "
              "To the extent that you, or anyone to whom you distributed the dataset, have computed such data "
              "from the listed images:"),
        _bullets([
            "740 ILCS 14/15(b) forbids collecting, capturing, purchasing, receiving through trade or otherwise "
            "obtaining a person's biometric identifiers or biometric information unless the person is first "
            "informed in writing that they are being collected or stored, and of the specific purpose and "
            "length of term for which they are collected, stored and used, and has signed a written release. "
            "I was never informed and never signed a release;",
            "740 ILCS 14/15(a) requires a private entity in possession of biometric identifiers or biometric "
            "information to have a written policy, available to the public, establishing a retention schedule "
            "and guidelines for permanently destroying them when the initial purpose of collecting them has "
            "been satisfied or within 3 years of the person's last interaction with the entity, whichever "
            "comes first, and to comply with it;",
            "740 ILCS 14/15(c) forbids selling, leasing, trading or otherwise profiting from a person's "
            "biometric identifiers or biometric information, and 740 ILCS 14/15(d) forbids disclosing or "
            "disseminating them without the person's consent.",
        ]),
        "I therefore ask you to:",
        _numbered([
            "permanently destroy all biometric identifiers and biometric information derived from the listed "
            "images (face geometry, landmarks, measurements, templates, embeddings, and annotations based on "
            "them), in every copy you hold;",
            "remove the listed images from the dataset and from every copy of it that you host or distribute, "
            "so that no one else derives biometric identifiers from them;",
            "send me your written retention and destruction policy (740 ILCS 14/15(a));",
            "tell me to whom you have disclosed or distributed the images or data derived from them "
            "(740 ILCS 14/15(d));",
            "confirm in writing, within 30 days, that this has been done.",
        ]),
        _fill("The Act gives any person aggrieved by a violation a right of action (740 ILCS 14/20), with "
              "liquidated damages of $1,000 for each negligent violation and $5,000 for each intentional or "
              "reckless violation, or actual damages if greater."),
    ])


# --------------------------------------------------------------------------- writing

def write_letters(letters: Iterable[Letter], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write each letter to ``out_dir/<letter.filename>`` (the folder is created) and return the paths.

    Each file is written to a temporary file in ``out_dir``, flushed to disk, then renamed over its
    name (``os.replace``): a reader sees the old letter or the new one, never half of one. All the
    temporary files are written before any is renamed, so a failure while writing (disk full, ...)
    leaves every existing file as it was; the temporary files are always removed. Only the files the
    letters name are ever replaced. Raises ``ValueError`` for a file name that is not a plain file
    name (or two letters with the same one), and ``OSError`` when the folder cannot be written or a
    letter's name is taken by something other than a file.
    """
    letters = list(letters)
    seen = set()
    for letter in letters:
        if not _safe_filename(letter.filename):
            raise ValueError(f"unsafe letter file name {letter.filename!r}")
        if letter.filename.lower() in seen:
            raise ValueError(f"two letters named {letter.filename!r}")
        seen.add(letter.filename.lower())
    out = Path(out_dir)
    if not letters:
        return []
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / letter.filename for letter in letters]
    for t in targets:
        if t.is_dir() and not t.is_symlink():
            raise IsADirectoryError(f"{t} is a folder; not replacing it with a letter")
    mask = _umask()
    temps: list[str] = []
    try:
        for letter in letters:
            fd, tmp = tempfile.mkstemp(dir=out, prefix=".letter-", suffix=".tmp")
            temps.append(tmp)
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; a letter is an ordinary file
                os.fchmod(fd, 0o666 & ~mask)
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(letter.text)
                f.flush()
                os.fsync(f.fileno())
        for i, (tmp, target) in enumerate(zip(temps, targets)):
            os.replace(tmp, target)
            temps[i] = ""
        fsync_dir(out)
    finally:
        for tmp in temps:
            if tmp:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
    return targets


def _umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux), since
    setting it is not thread-safe; elsewhere, set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


