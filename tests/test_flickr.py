"""Flickr URL forms -> photo id, owner and size; base58 short links; identities of catalog items."""

import csv
import random
import string

import pytest

from matcher.provenance.flickr import (
    BASE58_ALPHABET,
    SIZES,
    FlickrRef,
    base58_decode,
    base58_encode,
    identity_of,
    is_nsid,
    normalize_nsid,
    parse_owner,
    parse_url,
    short_url,
)


def core(ref):
    """What every URL form says: photo id, owner, size and kind (the details are checked on their own)."""
    return None if ref is None else FlickrRef(ref.photo_id, ref.owner, ref.owner_is_nsid, ref.size, ref.kind)


# --------------------------------------------------------------------------- image (static) URLs

@pytest.mark.parametrize("url, photo_id, size", [
    # farmN.staticflickr.com, every documented size suffix, and none (500 px)
    ("https://farm3.staticflickr.com/2564/2005397842_dc4d3a10e6_z.jpg", "2005397842", "z"),
    ("https://farm8.staticflickr.com/7130/6913731566_23879c079a_s.jpg", "6913731566", "s"),
    ("https://farm8.staticflickr.com/7130/6913731566_23879c079a_q.jpg", "6913731566", "q"),
    ("https://farm8.staticflickr.com/7130/6913731566_23879c079a_t.jpg", "6913731566", "t"),
    ("https://farm8.staticflickr.com/7130/6913731566_23879c079a_m.jpg", "6913731566", "m"),
    ("https://farm8.staticflickr.com/7130/6913731566_23879c079a_n.jpg", "6913731566", "n"),
    ("https://farm8.staticflickr.com/7130/6913731566_23879c079a.jpg", "6913731566", ""),
    ("https://farm8.staticflickr.com/7130/6913731566_23879c079a_c.jpg", "6913731566", "c"),
    ("https://farm8.staticflickr.com/7130/6913731566_23879c079a_b.jpg", "6913731566", "b"),
    ("http://farm4.staticflickr.com/3140/2734431137_15ed6e9f5d.jpg", "2734431137", ""),
    # the pre-2011 host name, and the oldest one without a farm
    ("http://farm1.static.flickr.com/2/1418878_1e92283336_m.jpg", "1418878", "m"),
    ("http://static.flickr.com/2/1418878_1e92283336.jpg", "1418878", ""),
    ("http://photos1.flickr.com/1418878_1e92283336.jpg", "1418878", ""),
    # live.staticflickr.com (today's form), large sizes with secrets of their own
    ("https://live.staticflickr.com/7372/12502775644_acfd415fa7_w.jpg", "12502775644", "w"),
    ("https://live.staticflickr.com/65535/52217925276_9c2f05e1f4_h.jpg", "52217925276", "h"),
    ("https://live.staticflickr.com/65535/52217925276_4c1d3a7b8e_k.jpg", "52217925276", "k"),
    ("https://live.staticflickr.com/65535/52217925276_0a1b2c3d4e_3k.jpg", "52217925276", "3k"),
    ("https://live.staticflickr.com/65535/52217925276_0a1b2c3d4e_4k.jpg", "52217925276", "4k"),
    ("https://live.staticflickr.com/65535/52217925276_0a1b2c3d4e_f.jpg", "52217925276", "f"),
    ("https://live.staticflickr.com/65535/52217925276_0a1b2c3d4e_5k.jpg", "52217925276", "5k"),
    ("https://live.staticflickr.com/65535/52217925276_0a1b2c3d4e_6k.jpg", "52217925276", "6k"),
    ("https://live.staticflickr.com/65535/52217925276_e41b00cb21_b_d.jpg", "52217925276", "b"),  # download
    # originals: their own secret and format
    ("https://farm1.staticflickr.com/3548/6920354962_118bbf4894_o.png", "6920354962", "o"),
    ("https://live.staticflickr.com/65535/51898711143_2f1a1b6c0d_o.gif", "51898711143", "o"),
    ("https://farm4.staticflickr.com/3909/15016757708_a1b2c3d4e5_o.JPG", "15016757708", "o"),
    # cN.staticflickr.com/FARM/SERVER/...
    ("https://c1.staticflickr.com/9/8890/17171767930_3a7a2b430c_z.jpg", "17171767930", "z"),
    ("https://c2.staticflickr.com/2/1534/24148019753_bc3bb60f50_o.jpg", "24148019753", "o"),
    # no scheme, protocol-relative, query string, surrounding spaces
    ("farm3.staticflickr.com/2564/2005397842_dc4d3a10e6_z.jpg", "2005397842", "z"),
    ("//live.staticflickr.com/7372/12502775644_acfd415fa7_w.jpg?zz=1", "12502775644", "w"),
    ("  https://farm3.staticflickr.com/2564/2005397842_dc4d3a10e6_z.jpg\n", "2005397842", "z"),
    ("HTTPS://FARM3.STATICFLICKR.COM/2564/2005397842_dc4d3a10e6_Z.jpg", "2005397842", "z"),
])
def test_static_urls(url, photo_id, size):
    assert core(parse_url(url)) == FlickrRef(photo_id, None, False, size, "static")


def test_sizes_follow_flickrs_table():
    # https://www.flickr.com/services/api/misc.urls.html: suffix -> longest edge
    assert SIZES == {"s": 75, "q": 150, "t": 100, "m": 240, "n": 320, "w": 400, "": 500, "z": 640, "c": 800,
                     "b": 1024, "h": 1600, "k": 2048, "3k": 3072, "4k": 4096, "f": 4096, "5k": 5120, "6k": 6144,
                     "o": None}
    for size in SIZES:
        suffix = f"_{size}" if size else ""
        assert parse_url(f"https://live.staticflickr.com/65535/5_0123456789{suffix}.jpg").size == size


# --------------------------------------------------------------------------- photo pages

@pytest.mark.parametrize("url, photo_id, owner, is_nsid_", [
    ("https://www.flickr.com/photos/16577737@N01/2005397842/", "2005397842", "16577737@N01", True),
    ("https://www.flickr.com/photos/16577737@N01/2005397842", "2005397842", "16577737@N01", True),
    ("http://www.flickr.com/photos/karlmai_studio/8421861553/sizes/l/", "8421861553", "karlmai_studio", False),
    ("https://www.flickr.com/photos/denverdwight/15016757708/sizes/o/in/photostream/", "15016757708",
     "denverdwight", False),
    ("https://www.flickr.com/photos/pwin/3397283476/in/set-72157615742463391/", "3397283476", "pwin", False),
    ("https://www.flickr.com/photos/jordi-sureda-plantalech/52217925276/in/album-72177720300955141/",
     "52217925276", "jordi-sureda-plantalech", False),
    ("https://www.flickr.com/photos/141446233@N08/52217925276/lightbox/", "52217925276", "141446233@N08", True),
    ("https://www.flickr.com/photos/141446233@N08/52217925276/in/dateposted/lightbox", "52217925276",
     "141446233@N08", True),
    ("https://flickr.com/photos/nasahqphoto/51287423411/?rb=1", "51287423411", "nasahqphoto", False),
    ("https://www.flickr.com/photos/nasahqphoto/51287423411/#comments", "51287423411", "nasahqphoto", False),
    ("http://m.flickr.com/photos/nasahqphoto/51287423411/", "51287423411", "nasahqphoto", False),
    ("https://secure.flickr.com/photos/24662369@N07/11738172576/", "11738172576", "24662369@N07", True),
    ("https://secure.flickr.com/photos/24662369@n07/11738172576/", "11738172576", "24662369@N07", True),
    ("http://m.flickr.com/#/photos/nasahqphoto/51287423411/", "51287423411", "nasahqphoto", False),
    ("www.flickr.com/photos/nasahqphoto/51287423411", "51287423411", "nasahqphoto", False),
])
def test_page_urls(url, photo_id, owner, is_nsid_):
    assert core(parse_url(url)) == FlickrRef(photo_id, owner, is_nsid_, None, "page")


def test_photo_gne():
    assert core(parse_url("https://www.flickr.com/photo.gne?id=2811466321")) == \
        FlickrRef("2811466321", None, False, None, "page")
    assert core(parse_url("http://flickr.com/photo.gne?rb=1&id=4325695128")) == \
        FlickrRef("4325695128", None, False, None, "page")
    assert core(parse_url("https://www.flickr.com/photo.gne?short=7Afjsu")) == \
        FlickrRef("4325695128", None, False, None, "short")
    assert core(parse_url("https://www.flickr.com/photos/me/4325695128/")) == \
        FlickrRef("4325695128", None, False, None, "page")  # the signed-in viewer: no owner


# --------------------------------------------------------------------------- short links and base58

#: Known (photo id, short code) pairs, from the flickrapi package's tests.
KNOWN = [(4325695128, "7Afjsu"), (2811466321, "5hruZg")]


@pytest.mark.parametrize("photo_id, code", KNOWN)
def test_base58_known_pairs(photo_id, code):
    assert base58_encode(photo_id) == code
    assert base58_decode(code) == photo_id
    assert short_url(photo_id) == f"https://flic.kr/p/{code}"
    for url in (f"https://flic.kr/p/{code}", f"http://flic.kr/p/{code}/", f"flic.kr/p/{code}",
                f"https://www.flic.kr/p/{code}"):
        assert core(parse_url(url)) == FlickrRef(str(photo_id), None, False, None, "short")


def test_base58_round_trip():
    rng = random.Random(0)
    for n in [0, 1, 57, 58, 59, 58**2, 10**10, 54_000_000_000] + [rng.randrange(10**12) for _ in range(500)]:
        code = base58_encode(n)
        assert set(code) <= set(BASE58_ALPHABET)
        assert base58_decode(code) == n
        assert parse_url(short_url(n)).photo_id == str(n)
    assert len(BASE58_ALPHABET) == 58 and not set("0OIl") & set(BASE58_ALPHABET)
    for bad in ("", "0", "O", "I", "l", "7Afj-u", "7Afjsu ", None, 12, "a" * 13):
        assert base58_decode(bad) is None
    with pytest.raises(ValueError):
        base58_encode(-1)


# --------------------------------------------------------------------------- the bundled sample manifest

def test_every_url_of_the_sample_manifest(sample):
    rows = list(csv.DictReader(open(sample / "manifest.csv", newline="")))
    assert sum("staticflickr" in r["url"] for r in rows) >= 20
    for r in rows:
        ref = parse_url(r["url"])
        page = parse_url(r["page_url"])
        if "staticflickr" in r["url"]:
            # ds-0001: .../2564/2005397842_dc4d3a10e6_z.jpg, stored as dataset/flickr_2005397842_dc4d3a.jpg
            parts = r["url"].rsplit("/", 1)[1].rsplit(".", 1)[0].split("_")
            assert core(ref) == FlickrRef(r["path"].split("_")[1], None, False, parts[2] if len(parts) == 3 else "",
                                    "static"), r
        else:
            assert ref is None, r  # images.rehost.example
        if "flickr.com/" in r["page_url"]:
            assert page.kind == "page" and page.owner == r["owner"] and page.owner_is_nsid, r
            assert ref is None or page.photo_id == ref.photo_id, r
        else:
            assert page is None, r  # rehost.example/p/...: the re-host's own page
        ident = identity_of(r, {})
        assert ident == {"photo_id": (ref or page).photo_id if (ref or page) else None,
                         "owner_nsid": r["owner"], "owner_name": None}, r


# --------------------------------------------------------------------------- anything else

JUNK = [
    None, 12, 3.5, b"https://flic.kr/p/7Afjsu", [], "", " ", "\n", "x", "flickr", "flickr.com", "https://flickr.com/",
    "https://www.flickr.com/photos/", "https://www.flickr.com/photos/jdoe/", "https://www.flickr.com/photos/jdoe/sets/72157/",
    "https://www.flickr.com/photos/jdoe/albums/72157", "https://www.flickr.com/photos/jdoe/favorites/",
    "https://www.flickr.com/photos/tags/2008/", "https://www.flickr.com/search/?text=cat",
    "https://www.flickr.com/people/12345@N01/", "https://www.flickr.com/groups/123/pool/",
    "https://www.flickr.com/photo.gne?id=abc", "https://www.flickr.com/photo.gne", "https://flic.kr/s/aHsjABC",
    "https://flic.kr/p/", "https://flic.kr/p/0OIl", "https://flic.kr/p/7Afjsu/extra",
    "https://farm3.staticflickr.com/2564/", "https://farm3.staticflickr.com/2564/2005397842.jpg",
    "https://farm3.staticflickr.com/2564/2005397842_zzzz_z.jpg", "https://farm3.staticflickr.com/2564/2005397842_dc4d3a10e6_x.jpg",
    "https://farm3.staticflickr.com/2564/2005397842_dc4d3a10e6_z.txt", "https://farm3.staticflickr.com/a/b/c/2005397842_dc4d3a10e6.jpg",
    "https://farm66.staticflickr.com/65535/buddyicons/141446233@N08_r.jpg", "https://evil.example/staticflickr.com/1/2_ab12.jpg",
    "https://staticflickr.com.evil.example/1/2_ab12cd.jpg", "https://flickr.com.evil.example/photos/a/1/",
    "ftp://farm3.staticflickr.com/2564/2005397842_dc4d3a10e6_z.jpg", "javascript:alert(1)", "file:///etc/passwd",
    "http://[::1", "http://[", "https://www.flickr.com/photos/jdoe/123 456/", "https://www.flickr.com/photos/j doe/123/",
    "https://www.flickr.com/photos/jd\x00oe/123/", "https://images.rehost.example/56/96/569656923ec1fce1.webp",
    "/home/me/Pictures/2005397842_dc4d3a10e6_z.jpg", "2005397842", "x" * 10_000,
]


@pytest.mark.parametrize("junk", JUNK, ids=range(len(JUNK)))
def test_junk_is_none(junk):
    assert parse_url(junk) is None


def test_no_string_raises():
    """Mutations of valid URLs and random text: parse_url and identity_of return, never raise."""
    rng = random.Random(1)
    seeds = ["https://farm3.staticflickr.com/2564/2005397842_dc4d3a10e6_z.jpg", "https://flic.kr/p/7Afjsu",
             "https://www.flickr.com/photos/16577737@N01/2005397842/in/photostream/",
             "https://www.flickr.com/photo.gne?id=2811466321"]
    alphabet = string.printable + "\u00e9\u202e\ufffd\U0001f600[]@%#?&=:/"
    for _ in range(3000):
        s = list(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            i = rng.randrange(len(s) + 1)
            op = rng.random()
            if op < 0.4:
                s.insert(i, rng.choice(alphabet))
            elif op < 0.8 and s:
                del s[min(i, len(s) - 1)]
            elif s:
                s[min(i, len(s) - 1)] = rng.choice(alphabet)
        text = "".join(s)
        ref = parse_url(text)
        assert ref is None or (ref.photo_id.isdigit() and ref.kind in ("static", "page", "short"))
        identity_of({"url": text, "page_url": text[::-1], "owner": text}, {"owner_name": text})
        parse_owner(text)
    for _ in range(1000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        assert parse_url(text) is None or parse_url(text).photo_id.isdigit()


# --------------------------------------------------------------------------- NSIDs, owners, identities

def test_nsid():
    assert is_nsid("16577737@N01") and is_nsid("141446233@N08") and is_nsid("12@n00")
    assert normalize_nsid(" 12@n00 ") == "12@N00"
    for bad in ("16577737", "@N01", "16577737@N1", "16577737@N012", "abc@N01", "16577737@M01", None, 5):
        assert not is_nsid(bad) and normalize_nsid(bad) is None


def test_parse_owner():
    assert parse_owner("16577737@N01") == ("16577737@N01", None)
    assert parse_owner("karlmai_studio") == (None, "karlmai_studio")
    assert parse_owner("Jordi Sureda") == (None, "Jordi Sureda")  # a screen name
    assert parse_owner("https://www.flickr.com/photos/karlmai_studio/") == (None, "karlmai_studio")
    assert parse_owner("https://www.flickr.com/people/16577737@N01/") == ("16577737@N01", None)
    assert parse_owner("flickr.com/photos/karlmai_studio/8421861553/") == (None, "karlmai_studio")
    for bad in ("", "  ", "https://example.com/photos/x/", "https://www.flickr.com/photos/", "a/b", "x\x00y", None):
        assert parse_owner(bad) == (None, None)


def test_identity_of():
    url = "https://farm3.staticflickr.com/2564/2005397842_dc4d3a10e6_z.jpg"
    # image URL + NSID owner (Diversity in Faces style)
    assert identity_of({"url": url, "owner": "16577737@N01"}, {}) == \
        {"photo_id": "2005397842", "owner_nsid": "16577737@N01", "owner_name": None}
    # a page URL with a path alias names the owner; a user name as owner on a Flickr item is a name
    assert identity_of({"url": url, "page_url": "https://www.flickr.com/photos/medusa_fan/2005397842/"}, {}) == \
        {"photo_id": "2005397842", "owner_nsid": None, "owner_name": "medusa_fan"}
    assert identity_of({"url": url, "owner": "Medusa Fan"}, None) == \
        {"photo_id": "2005397842", "owner_nsid": None, "owner_name": "Medusa Fan"}
    # a page of another photo says nothing about this one's owner
    assert identity_of({"url": url, "page_url": "https://www.flickr.com/photos/someone/1/"}, {}) == \
        {"photo_id": "2005397842", "owner_nsid": None, "owner_name": None}
    # YFCC100M rows: user NSID and nickname as manifest columns (owner takes the NSID, the nickname is extra)
    assert identity_of({"url": url, "owner": "16577737@N01"}, {"user_nickname": "medusa fan", "date_taken": "2007"}) == \
        {"photo_id": "2005397842", "owner_nsid": "16577737@N01", "owner_name": "medusa fan"}
    # explicit extras, whatever else the row says
    assert identity_of({"path": "/data/x.jpg"}, {"owner_nsid": "16577737@n01", "owner_name": "mf", "photo_id": "007"}) == \
        {"photo_id": "7", "owner_nsid": "16577737@N01", "owner_name": "mf"}
    # a dead or page-only row still has its identity
    assert identity_of({"page_url": "https://flic.kr/p/7Afjsu", "owner": "16577737@N01"}, {}) == \
        {"photo_id": "4325695128", "owner_nsid": "16577737@N01", "owner_name": None}
    # not on Flickr by any sign: an owner name alone is nobody's Flickr account
    assert identity_of({"url": "https://images.example/x.jpg", "owner": "medusa_fan"}, {"username": "medusa_fan"}) is None
    assert identity_of({"path": "/data/x.jpg"}, {}) is None
    assert identity_of({}, {}) is None and identity_of(None, None) is None
    # an NSID anywhere is a sign
    assert identity_of({"url": "https://images.example/x.jpg"}, {"user_nsid": "16577737@N01", "username": "mf"}) == \
        {"photo_id": None, "owner_nsid": "16577737@N01", "owner_name": "mf"}
    # junk values are ignored, not stored
    assert identity_of({"url": url, "owner": "x\x00y"}, {"owner_name": ["not", "text"], "photo_id": "12ab"}) == \
        {"photo_id": "2005397842", "owner_nsid": None, "owner_name": None}


# --------------------------------------------------------------------------- every other URL form, and what they keep

@pytest.mark.parametrize("url, expected", [
    # video files on live.staticflickr.com: id, secret, the rendition as the size, no owner
    ("https://live.staticflickr.com/video/52184725340/0a1b2c3d4e/720p.mp4",
     FlickrRef("52184725340", None, False, "720p", "video", secret="0a1b2c3d4e", extension="mp4", media="video")),
    ("https://live.staticflickr.com/video/52184725340/0a1b2c3d4e/orig.mp4?s=eyJpIjo",
     FlickrRef("52184725340", None, False, "orig", "video", secret="0a1b2c3d4e", extension="mp4", media="video")),
    # video pages, with an NSID or a path alias
    ("https://www.flickr.com/videos/24662369@N07/11738172576/",
     FlickrRef("11738172576", "24662369@N07", True, None, "page", media="video")),
    ("http://flickr.com/videos/nasahqphoto/51287423411/in/photostream/",
     FlickrRef("51287423411", "nasahqphoto", False, None, "page", media="video")),
    # the old singular /photo/ form
    ("http://www.flickr.com/photo/11864207@N00/2368127776",
     FlickrRef("2368127776", "11864207@N00", True, None, "page")),
    ("https://flickr.com/photo/jdoe/2368127776/",
     FlickrRef("2368127776", "jdoe", False, None, "page")),
    # photo_zoom.gne (no owner)
    ("http://www.flickr.com/photo_zoom.gne?id=2368127776&size=l",
     FlickrRef("2368127776", None, False, None, "page")),
    # albums (old sets) and group pools a page is seen in
    ("https://www.flickr.com/photos/jdoe/2368127776/in/album-72157624515011339/",
     FlickrRef("2368127776", "jdoe", False, None, "page", album_id="72157624515011339")),
    ("https://www.flickr.com/photos/11864207@N00/2368127776/in/set-72157594252341413",
     FlickrRef("2368127776", "11864207@N00", True, None, "page", album_id="72157594252341413")),
    ("https://www.flickr.com/photos/jdoe/2368127776/in/pool-34427469792@N01/",
     FlickrRef("2368127776", "jdoe", False, None, "page", group_id="34427469792@N01")),
    ("https://www.flickr.com/photos/jdoe/2368127776/in/pool-streetphotography",
     FlickrRef("2368127776", "jdoe", False, None, "page", group_id="streetphotography")),
    # farm, server, secret, extension of image URLs; the original's secret is its own
    ("http://farm1.staticflickr.com/7014/2368127776_6b877559d9.jpg",
     FlickrRef("2368127776", None, False, "", "static", farm="1", server="7014", secret="6b877559d9", extension="jpg")),
    ("https://farm4.staticflickr.com/3909/15016757708_a1b2c3d4e5_o.PNG",
     FlickrRef("15016757708", None, False, "o", "static", farm="4", server="3909", original_secret="a1b2c3d4e5",
               extension="png")),
    ("https://c1.staticflickr.com/9/8890/17171767930_3a7a2b430c_z.jpeg",
     FlickrRef("17171767930", None, False, "z", "static", farm="9", server="8890", secret="3a7a2b430c",
               extension="jpg")),
    ("https://live.staticflickr.com/7372/12502775644_acfd415fa7_w.jpg",
     FlickrRef("12502775644", None, False, "w", "static", server="7372", secret="acfd415fa7", extension="jpg")),
    ("http://photos3.flickr.com/1418878_1e92283336.jpg",
     FlickrRef("1418878", None, False, "", "static", secret="1e92283336", extension="jpg")),
])
def test_more_url_forms_and_their_details(url, expected):
    assert parse_url(url) == expected


@pytest.mark.parametrize("url", [
    "https://live.staticflickr.com/video/notanid/0a1b2c3d4e/720p.mp4",
    "https://live.staticflickr.com/video/52184725340/not-a-secret!/720p.mp4",
    "https://live.staticflickr.com/video/52184725340/0a1b2c3d4e",
    "https://www.flickr.com/videos/jdoe/",
    "https://www.flickr.com/photo/jdoe/albums",
    "https://www.flickr.com/photo_zoom.gne?id=abc",
    "https://www.flickr.com/photos/jdoe/albums/72157624515011339",
])
def test_not_photos(url):
    assert parse_url(url) is None


def test_flickr_details_from_urls_and_yfcc_fields():
    from matcher.provenance.flickr import flickr_details

    fields = {"url": "https://farm4.staticflickr.com/3909/15016757708_a1b2c3d4e5_o.jpg",
              "page_url": "https://www.flickr.com/photos/jdoe/15016757708/in/album-721576/"}
    assert flickr_details(fields) == {"farm": "4", "server": "3909", "original_secret": "a1b2c3d4e5",
                                      "extension": "jpg", "album_id": "721576"}
    # a page of another photo says nothing about this one
    fields["page_url"] = "https://www.flickr.com/photos/jdoe/999/in/album-721576/"
    assert "album_id" not in flickr_details(fields)
    # YFCC100M's own fields fill what the URL does not say
    yfcc = {"photo_id": "2368127776", "server_id": "7014", "farm_id": "1", "secret": "6B877559D9",
            "secret_original": "0f1e2d3c4b", "extension": "jpg"}
    assert flickr_details({"url": "http://farm1.staticflickr.com/7014/2368127776_6b877559d9.jpg"}, yfcc) == {
        "farm": "1", "server": "7014", "secret": "6b877559d9", "original_secret": "0f1e2d3c4b", "extension": "jpg"}
    # nothing Flickr about it: no details, whatever the extras are called
    assert flickr_details({"url": "https://example.org/a.jpg"}, {"secret": "abc"}) is None
    assert flickr_details({"url": "https://live.staticflickr.com/video/5218/0a1b2c3d4e/360p.mp4"}) == {
        "secret": "0a1b2c3d4e", "extension": "mp4", "media": "video"}
