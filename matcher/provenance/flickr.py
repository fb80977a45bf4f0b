"""Flickr identities: every form of Flickr URL parsed into a photo id, an owner and a size. No I/O.

Datasets built from Flickr (IBM's Diversity in Faces, MegaFace, YFCC100M and its subsets) list photos
by URL. A listed URL names the photo exactly, whatever happened to the picture since, so "which of my
Flickr photos are listed" can be answered by identity (a photo id, an owner), cheaply and exactly,
beside matcher's answer by content (copies re-hosted under other URLs).

URL forms understood by :func:`parse_url`:

* image URLs (``kind="static"``): ``farmN.staticflickr.com/SERVER/ID_SECRET[_SIZE].jpg``, the older
  ``farmN.static.flickr.com`` and ``static.flickr.com``, ``live.staticflickr.com/SERVER/...``,
  ``cN.staticflickr.com/FARM/SERVER/...``, the 2004-era ``photosN.flickr.com/ID_SECRET.jpg``;
  originals ``ID_ORIGINALSECRET_o.{jpg,png,gif}``; the download form ``..._SIZE_d.jpg``. No owner.
  The farm, server, secret (the original secret for ``_o``) and extension are kept.
* video files (``kind="video"``): ``live.staticflickr.com/video/ID/SECRET/SIZE.mp4`` (``SIZE`` such as
  ``360p``, ``720p``, ``orig``). No owner; ``media="video"``.
* photo pages (``kind="page"``): ``www.flickr.com/photos/{alias-or-NSID}/{ID}`` with anything after
  the id (``/in/...``, ``/sizes/...``, ``/lightbox``), query strings and fragments; http or https;
  ``flickr.com``, ``www.``, ``m.``, ``secure.``, ``touch.``; the old mobile ``m.flickr.com/#/photos/...``;
  the old singular ``flickr.com/photo/{owner}/{ID}``; video pages ``flickr.com/videos/{owner}/{ID}/``
  (``media="video"``); ``flickr.com/photo.gne?id=ID`` and ``photo_zoom.gne?id=ID`` (no owner). The
  album (``/in/album-ID``, ``/in/set-ID``, ``/sets/ID/``, ``/albums/ID/``) and group pool
  (``/in/pool-GROUP``, ``/groups/GROUP/pool/``) a page URL is seen in are kept.
* short links (``kind="short"``): ``flic.kr/p/{base58}`` (Flickr's alphabet, :data:`BASE58_ALPHABET`),
  and ``flickr.com/photo.gne?short={base58}``.

A missing scheme (``www.flickr.com/photos/...``, ``//live.staticflickr.com/...``) is accepted.
Anything else gives None; no string makes these functions raise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "FlickrRef",
    "SIZES",
    "BASE58_ALPHABET",
    "parse_url",
    "base58_encode",
    "base58_decode",
    "short_url",
    "is_nsid",
    "normalize_nsid",
    "parse_owner",
    "identity_of",
    "flickr_details",
    "DETAIL_FIELDS",
]

#: Size suffix of an image URL -> longest edge in pixels, from Flickr's documented table
#: (https://www.flickr.com/services/api/misc.urls.html). ``""`` is the URL without a suffix (Medium,
#: 500 px); ``s`` and ``q`` are cropped squares; ``f`` exists only for 2:1 photos; the original ``o``
#: has no fixed size (None). ``h`` and above, and ``o``, have secrets of their own.
SIZES: dict[str, int | None] = {
    "s": 75, "q": 150, "t": 100, "m": 240, "n": 320, "w": 400, "": 500, "z": 640, "c": 800, "b": 1024,
    "h": 1600, "k": 2048, "3k": 3072, "4k": 4096, "f": 4096, "5k": 5120, "6k": 6144, "o": None,
}

#: Flickr's base58 alphabet for flic.kr short links (no 0, O, I, l).
BASE58_ALPHABET = "123456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
_B58 = {c: i for i, c in enumerate(BASE58_ALPHABET)}

_NSID = re.compile(r"([0-9]{1,15})@[nN]([0-9]{2})")
_ALIAS = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_DIGITS = re.compile(r"[0-9]{1,20}")
_B58_TEXT = re.compile(f"[{BASE58_ALPHABET}]{{1,12}}")
_SIZE_ALT = "|".join(sorted((s for s in SIZES if s), key=len, reverse=True))
_STATIC_FILE = re.compile(
    rf"([0-9]{{1,20}})_([0-9a-f]{{4,40}})(?:_({_SIZE_ALT}))?(?:_d)?\.(jpe?g|png|gif)", re.IGNORECASE
)
_FARM_HOST = re.compile(r"farm([0-9]{1,4})\.", re.IGNORECASE)
_VIDEO_FILE = re.compile(r"[A-Za-z0-9_]{1,16}(?:\.(?:mp4|mov|webm|m4v))?", re.IGNORECASE)
_SECRET = re.compile(r"[0-9a-f]{4,40}", re.IGNORECASE)
_SET_ID = re.compile(r"(?:album|set)-([0-9]{1,25})")
_GROUP_ID = re.compile(r"pool-([A-Za-z0-9_.\-@]{1,64})")
_STATIC_HOST = re.compile(
    r"(?:(?:farm[0-9]+|live|c[0-9]+)\.staticflickr\.com|staticflickr\.com"
    r"|(?:farm[0-9]+\.)?static\.flickr\.com|photos[0-9]*\.flickr\.com)"
)
_PAGE_HOSTS = frozenset({"flickr.com", "www.flickr.com", "m.flickr.com", "secure.flickr.com", "touch.flickr.com"})
_SHORT_HOSTS = frozenset({"flic.kr", "www.flic.kr"})
# /photos/<this>/<digits> that are not photo pages
_NOT_OWNERS = frozenset({"tags", "search", "upload", "organize", "friends"})
_MAX_TEXT = 4096


@dataclass(frozen=True)
class FlickrRef:
    """What a Flickr URL says about a photo.

    ``photo_id`` is the decimal id (no leading zeros). ``owner`` is the NSID (``owner_is_nsid``) or
    the path alias from a page URL; image and short URLs name no owner. ``size`` is an image URL's
    size suffix (a key of :data:`SIZES`, ``""`` for none), None for pages and short links.
    """

    photo_id: str
    owner: str | None
    owner_is_nsid: bool
    size: str | None
    kind: str  # "static" | "video" | "page" | "short"
    # what else the URL says, when it says it (an opt-out letter quotes them)
    farm: str | None = None
    server: str | None = None
    secret: str | None = None
    original_secret: str | None = None  # the secret of an ``_o`` (original size) URL
    extension: str | None = None
    album_id: str | None = None
    group_id: str | None = None
    media: str = "photo"  # "photo" | "video"

    def details(self) -> dict[str, str]:
        """The fields of :data:`DETAIL_FIELDS` this URL gives (``media`` only when it is a video)."""
        out = {k: getattr(self, k) for k in DETAIL_FIELDS if k != "media" and getattr(self, k) is not None}
        if self.media != "photo":
            out["media"] = self.media
        return out


#: What a URL (or a YFCC100M line) may say about a photo beyond its id and owner, kept as an item's
#: ``extra["flickr"]``.
DETAIL_FIELDS = ("farm", "server", "secret", "original_secret", "extension", "album_id", "group_id", "media")


def is_nsid(text: Any) -> bool:
    """``text`` is a Flickr NSID such as ``16577737@N01``."""
    return isinstance(text, str) and _NSID.fullmatch(text.strip()) is not None


def normalize_nsid(text: Any) -> str | None:
    """The NSID in canonical form (``12345@N01``; a lower-case ``n`` is accepted), or None."""
    if not isinstance(text, str):
        return None
    m = _NSID.fullmatch(text.strip())
    return f"{m.group(1)}@N{m.group(2)}" if m else None


def base58_encode(number: int) -> str:
    """A photo id as the base58 code of its flic.kr short link."""
    number = int(number)
    if number < 0:
        raise ValueError("photo ids are not negative")
    out = []
    while True:
        number, r = divmod(number, 58)
        out.append(BASE58_ALPHABET[r])
        if number == 0:
            return "".join(reversed(out))


def base58_decode(code: Any) -> int | None:
    """The photo id of a flic.kr short code, or None when ``code`` is not one."""
    if not isinstance(code, str) or not _B58_TEXT.fullmatch(code):
        return None
    n = 0
    for c in code:
        n = n * 58 + _B58[c]
    return n


def short_url(photo_id: int | str) -> str:
    """``https://flic.kr/p/{base58}`` for a photo id."""
    return f"https://flic.kr/p/{base58_encode(int(photo_id))}"


def _photo_id(text: str) -> str | None:
    return str(int(text)) if _DIGITS.fullmatch(text) else None


def _split(text: Any):
    """urlsplit of a possibly scheme-less http(s) URL, or None."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not text or len(text) > _MAX_TEXT or any(c.isspace() for c in text):
        return None
    if text.startswith("//"):
        text = "https:" + text
    elif "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return parts, host


def _in_context(rest: list[str]) -> dict[str, str]:
    """The album and group a photo page URL is seen in: ``/in/album-ID``, ``/in/set-ID``, ``/in/pool-GROUP``."""
    out: dict[str, str] = {}
    for seg in rest:
        m = _SET_ID.fullmatch(seg)
        if m:
            out.setdefault("album_id", m.group(1))
        m = _GROUP_ID.fullmatch(seg)
        if m:
            out.setdefault("group_id", m.group(1))
    return out


def _page(path: str, query: str) -> FlickrRef | None:
    segs = [s for s in path.split("/") if s]
    if len(segs) == 1 and segs[0].lower() in ("photo.gne", "photo_zoom.gne"):
        q = parse_qs(query)
        pid = _photo_id((q.get("id") or [""])[0])
        if pid is not None:
            return FlickrRef(pid, None, False, None, "page")
        n = base58_decode((q.get("short") or [""])[0])
        return FlickrRef(str(n), None, False, None, "short") if n is not None else None
    if len(segs) < 3 or segs[0].lower() not in ("photos", "photo", "videos"):
        return None
    owner, pid = segs[1], _photo_id(segs[2])
    if pid is None or owner.lower() in _NOT_OWNERS:
        return None
    more = _in_context(segs[3:])
    media = "video" if segs[0].lower() == "videos" else "photo"
    nsid = normalize_nsid(owner)
    if nsid is not None:
        return FlickrRef(pid, nsid, True, None, "page", media=media, **more)
    if owner.lower() == "me":  # the signed-in viewer: no owner named
        return FlickrRef(pid, None, False, None, "page", media=media, **more)
    if not _ALIAS.fullmatch(owner):
        return None
    return FlickrRef(pid, owner, False, None, "page", media=media, **more)


def _static(host: str, segs: list[str]) -> FlickrRef | None:
    """An image file URL: ``[FARM/]SERVER/ID_SECRET[_SIZE].EXT`` (or ``ID_SECRET.EXT``), or a video file
    ``video/ID/SECRET/SIZE.mp4``."""
    if len(segs) == 4 and segs[0] == "video":
        pid = _photo_id(segs[1])
        if pid is None or not _SECRET.fullmatch(segs[2]) or not _VIDEO_FILE.fullmatch(segs[3]):
            return None
        ext = segs[3].rsplit(".", 1)[1].lower() if "." in segs[3] else None
        return FlickrRef(pid, None, False, segs[3].split(".")[0].lower(), "video", secret=segs[2].lower(),
                         extension=ext, media="video")
    if not segs or not 0 <= len(segs) - 1 <= 2 or not all(_DIGITS.fullmatch(s) for s in segs[:-1]):
        return None
    m = _STATIC_FILE.fullmatch(segs[-1])
    if m is None:
        return None
    size = (m.group(3) or "").lower()
    farm_m = _FARM_HOST.match(host)
    farm = farm_m.group(1) if farm_m else (segs[0] if len(segs) == 3 else None)
    server = segs[-2] if len(segs) >= 2 else None
    secret = m.group(2).lower()
    ext = m.group(4).lower()
    return FlickrRef(str(int(m.group(1))), None, False, size, "static", farm=farm, server=server,
                     secret=None if size == "o" else secret, original_secret=secret if size == "o" else None,
                     extension="jpg" if ext == "jpeg" else ext)


def parse_url(text: Any) -> FlickrRef | None:
    """The photo a Flickr URL names (see the module docstring for the forms), or None."""
    split = _split(text)
    if split is None:
        return None
    parts, host = split
    host = host.lower()
    if _STATIC_HOST.fullmatch(host):
        return _static(host, parts.path.split("/")[1:])
    if host in _SHORT_HOSTS:
        m = re.fullmatch(r"/p/([^/]+)/?", parts.path)
        n = base58_decode(m.group(1)) if m else None
        return FlickrRef(str(n), None, False, None, "short") if n is not None else None
    if host in _PAGE_HOSTS:
        ref = _page(parts.path, parts.query)
        if ref is None and parts.path in ("", "/") and parts.fragment.startswith("/photos/"):
            ref = _page(parts.fragment.split("?")[0], "")  # m.flickr.com/#/photos/alias/123/
        return ref
    return None


def parse_owner(text: Any) -> tuple[str | None, str | None]:
    """``(nsid, name)`` from what a person says their Flickr account is: an NSID, a user name or path
    alias, or a profile, photostream or photo page URL (``flickr.com/photos/jdoe/``,
    ``flickr.com/people/12345@N01``). ``(None, None)`` when it is none of these."""
    if not isinstance(text, str) or not text.strip() or len(text) > _MAX_TEXT:
        return None, None
    text = text.strip()
    nsid = normalize_nsid(text)
    if nsid is not None:
        return nsid, None
    if "/" in text:
        split = _split(text)
        if split is None or split[1].lower() not in _PAGE_HOSTS:
            return None, None
        segs = [s for s in split[0].path.split("/") if s]
        if len(segs) < 2 or segs[0].lower() not in ("photos", "people") or segs[1].lower() in _NOT_OWNERS | {"me"}:
            return None, None
        text = segs[1]
        nsid = normalize_nsid(text)
        if nsid is not None:
            return nsid, None
        return (None, text) if _ALIAS.fullmatch(text) else (None, None)
    # a screen name may have spaces and any letters; control characters are not names
    return (None, text) if text.isprintable() else (None, None)


def _norm_key(key: Any) -> str:
    return str(key).strip().lower().replace("-", "").replace("_", "").replace(" ", "")


# manifest extras (normalised header -> identity field). The first group is what the identity fields
# are called here; the others are the usual YFCC100M / Diversity in Faces / MegaFace headers, taken
# only for items that are on Flickr by another sign (a Flickr URL, an NSID).
_EXTRA_EXPLICIT = {"ownernsid": "owner_nsid", "ownername": "owner_name", "photoid": "photo_id"}
_EXTRA_ALIASES = {
    "usernsid": "owner_nsid", "nsid": "owner_nsid", "flickrnsid": "owner_nsid", "userid": "owner_nsid",
    "usernickname": "owner_name", "nickname": "owner_name", "username": "owner_name", "pathalias": "owner_name",
    "ownerusername": "owner_name", "flickruser": "owner_name", "flickrusername": "owner_name",
    "flickrid": "photo_id", "flickrphotoid": "photo_id", "photovideoidentifier": "photo_id",
}


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int):
        v = str(v)
    if not isinstance(v, str):
        return None
    v = v.strip()
    return v if v and len(v) <= 256 and v.isprintable() else None


def identity_of(fields: Mapping[str, Any] | None, extra: Mapping[str, Any] | None = None) -> dict | None:
    """The Flickr identity of a catalog item: ``{"photo_id", "owner_nsid", "owner_name"}`` (any may be
    None), or None when nothing says the item is a Flickr photo.

    From the item's ``url`` and ``page_url`` (any form :func:`parse_url` knows; the page URL's owner is
    used when it names the same photo as the image URL), its ``owner`` (an NSID, or a user name when the
    item is on Flickr by another sign) and manifest extras: ``owner_nsid``, ``owner_name`` and
    ``photo_id`` always; the usual YFCC100M-style headers (``user_nsid``, ``user_nickname``,
    ``username``, ``path_alias``...) once the item is known to be on Flickr.
    """
    fields = fields if isinstance(fields, Mapping) else {}
    extra = extra if isinstance(extra, Mapping) else {}
    explicit: dict[str, str] = {}
    aliased: dict[str, str] = {}
    for k, v in extra.items():
        v = _text(v)
        if v is None:
            continue
        nk = _norm_key(k)
        if nk in _EXTRA_EXPLICIT:
            explicit.setdefault(_EXTRA_EXPLICIT[nk], v)
        elif nk in _EXTRA_ALIASES:
            aliased.setdefault(_EXTRA_ALIASES[nk], v)

    img = parse_url(fields.get("url"))
    page = parse_url(fields.get("page_url"))
    owner = _text(fields.get("owner"))
    photo_id = img.photo_id if img else None
    if page is not None and photo_id is not None and page.photo_id != photo_id:
        page = None  # the page is of another photo: its owner is not this photo's
    if photo_id is None and page is not None:
        photo_id = page.photo_id

    nsids = [explicit.get("owner_nsid"), owner, page.owner if page and page.owner_is_nsid else None]
    on_flickr = img is not None or page is not None or bool(explicit) or any(is_nsid(n) for n in nsids)
    if not on_flickr:
        nsids.append(aliased.get("owner_nsid"))
        on_flickr = any(is_nsid(n) for n in nsids)
    if not on_flickr:
        return None
    nsids.append(aliased.get("owner_nsid"))
    owner_nsid = next((normalize_nsid(n) for n in nsids if is_nsid(n)), None)
    names = [explicit.get("owner_name"), aliased.get("owner_name"), None if is_nsid(owner) else owner,
             page.owner if page and page.owner and not page.owner_is_nsid else None]
    owner_name = next((n for n in names if n and not is_nsid(n)), None)
    if photo_id is None:
        for v in (explicit.get("photo_id"), aliased.get("photo_id")):
            if v is not None and _DIGITS.fullmatch(v):
                photo_id = str(int(v))
                break
    if photo_id is None and owner_nsid is None and owner_name is None:
        return None
    return {"photo_id": photo_id, "owner_nsid": owner_nsid, "owner_name": owner_name}


# manifest extras that carry URL details (YFCC100M's fields, and these names themselves)
_DETAIL_EXTRAS = {"farmid": "farm", "farm": "farm", "serverid": "server", "server": "server", "secret": "secret",
                  "secretoriginal": "original_secret", "originalsecret": "original_secret",
                  "extension": "extension", "originalextension": "extension", "albumid": "album_id",
                  "setid": "album_id", "groupid": "group_id"}


def flickr_details(fields: Mapping[str, Any] | None, extra: Mapping[str, Any] | None = None) -> dict[str, str] | None:
    """What an item's URLs (and manifest extras such as YFCC100M's farm, server, secret, original secret and
    extension) say about its Flickr photo beyond id and owner: ``{farm, server, secret, original_secret,
    extension, album_id, group_id, media}``, the ones known; None when none is. The image URL's word wins,
    then the page URL's (when it names the same photo), then the extras."""
    fields = fields if isinstance(fields, Mapping) else {}
    extra = extra if isinstance(extra, Mapping) else {}
    img = parse_url(fields.get("url"))
    page = parse_url(fields.get("page_url"))
    if img is not None and page is not None and page.photo_id != img.photo_id:
        page = None
    out: dict[str, str] = {}
    for ref in (img, page):
        if ref is not None:
            for k, v in ref.details().items():
                out.setdefault(k, v)
    if img is not None or page is not None or identity_of(fields, extra) is not None:
        for k, v in extra.items():
            name = _DETAIL_EXTRAS.get(_norm_key(k))
            v = _text(v)
            if name and v and _ALIAS.fullmatch(v):
                out.setdefault(name, v.lower() if name in ("secret", "original_secret", "extension") else v)
    return out or None
