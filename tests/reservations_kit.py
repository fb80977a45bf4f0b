"""Files and a site with every kind of reservation, for tests/test_reservations.py and
benchmarks/bench_reservations.py: real images (the sample dataset's photos) written with IPTC XMP by
Pillow, a C2PA manifest signed by the C2PA SDK (c2pa-python) with a throwaway certificate chain, and a
loopback HTTP site that sends each reservation header and serves tdmrep.json, robots.txt and ai.txt."""

from __future__ import annotations

import csv
import datetime
import io
import json
from pathlib import Path

from PIL import Image, PngImagePlugin

from conftest import SAMPLE, LoopbackHandler, LoopbackServer
from matcher.provenance.reservations.xmp import data_mining_xmp

DATASET = SAMPLE / "dataset"
#: the sample's dataset photo that sample/my-photos/IMG_0002.jpg registers in an opt-out registry
REGISTERED = DATASET / "flickr_2368127776_6b8775.jpg"
#: the sample's dataset photos the kit marks (each a different photo, none of them REGISTERED)
PHOTOS = sorted(p for p in DATASET.glob("flickr_*.jpg") if p != REGISTERED)

ROBOTS = b"User-agent: GPTBot\nUser-agent: CCBot\nDisallow: /private/\n\nUser-agent: *\nDisallow: /cgi-bin/\n"
AI_TXT = b"# Spawning AI\nUser-Agent: *\nDisallow: *.png\n"
TDMREP = json.dumps([{"location": "/tdm/*", "tdm-reservation": 1, "tdm-policy": "https://example.org/tdm-policy.json"},
                     {"location": "/*", "tdm-reservation": 0}]).encode()
#: path -> response headers of the images the site serves
HEADERS = {
    "/img/plain.jpg": {},
    "/img/noai.jpg": {"X-Robots-Tag": "noai, noimageai"},
    "/img/agent.jpg": {"X-Robots-Tag": "GPTBot: noml"},
    "/img/googlebot.jpg": {"X-Robots-Tag": "googlebot: noindex"},
    "/img/tdm.jpg": {"tdm-reservation": "1", "tdm-policy": "https://example.org/policy"},
    "/private/p.jpg": {},
    "/tdm/t.jpg": {},
    "/img/a.png": {},
}


def save_jpeg(src: Path, dst: Path, xmp: bytes | None = None) -> Path:
    with Image.open(src) as im:
        exif = im.info.get("exif")
        kw = {"quality": 90}
        if exif:
            kw["exif"] = exif
        if xmp is not None:
            kw["xmp"] = xmp
        im.convert("RGB").save(dst, "JPEG", **kw)
    return dst


def save_png(src: Path, dst: Path, xmp: bytes | None = None) -> Path:
    info = PngImagePlugin.PngInfo()
    if xmp is not None:
        info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8"))
    with Image.open(src) as im:
        im.convert("RGB").save(dst, "PNG", pnginfo=info)
    return dst


def signer_chain():
    """A throwaway ES256 CA and signing certificate (the C2PA SDK refuses a self-signed signer)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "matcher tests")])

    now = datetime.datetime.now(datetime.timezone.utc)
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                 encipher_only=False, decipher_only=False)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **usage), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    ee = (x509.CertificateBuilder().subject_name(name("test signer")).issuer_name(ca.subject)
          .public_key(key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage), critical=True)
          .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
          .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    chain = ee.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return chain, pem


def sign_c2pa(src: Path, dst: Path, entries: dict, label: str = "cawg.training-mining") -> Path:
    """``src`` (a JPEG) with a C2PA manifest holding a training-and-data-mining assertion, signed."""
    import c2pa

    chain, pem = signer_chain()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, pem, None))
    manifest = {"claim_generator_info": [{"name": "matcher-tests", "version": "1"}], "title": dst.name,
                "assertions": [
                    {"label": "c2pa.actions", "data": {"actions": [{"action": "c2pa.created", "digitalSourceType":
                     "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"}]}},
                    {"label": label, "data": {"entries": entries}}]}
    out = io.BytesIO()
    with open(src, "rb") as f:
        c2pa.Builder(manifest).sign(signer, "image/jpeg", f, out)
    dst.write_bytes(out.getvalue())
    return dst


def embedded_files(d: Path) -> dict[str, Path]:
    """Files with each embedded reservation (and without, and malformed), by name."""
    d.mkdir(parents=True, exist_ok=True)
    p = PHOTOS
    out = {
        "iptc-aiml": save_jpeg(p[0], d / "iptc-aiml.jpg", data_mining_xmp("DMI-PROHIBITED-AIMLTRAINING")),
        "iptc-genai-png": save_png(p[1], d / "iptc-genai.png", data_mining_xmp("DMI-PROHIBITED-GENAIMLTRAINING")),
        "iptc-allowed": save_jpeg(p[2], d / "iptc-allowed.jpg", data_mining_xmp("DMI-ALLOWED")),
        "c2pa-damaged": d / "c2pa-damaged.jpg",
        "iptc-malformed": save_jpeg(p[3], d / "iptc-malformed.jpg",
                                    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><broken</x:xmpmeta>'),
        "cawg": sign_c2pa(p[4], d / "cawg.jpg", {"cawg.ai_training": {"use": "notAllowed"},
                                                   "cawg.ai_generative_training": {"use": "notAllowed"},
                                                   "cawg.data_mining": {"use": "constrained", "constraint_info": "ask"}}),
        "c2pa-old": sign_c2pa(p[5], d / "c2pa-old.jpg", {"c2pa.ai_training": {"use": "notAllowed"}},
                              label="c2pa.training-mining"),
    }
    # a decodable JPEG whose C2PA manifest store is damaged: a c2pa superbox whose inner box overruns it
    jumd = b"c2pa" + bytes(12) + b"\x03" + b"c2pa\x00"
    jumd = (8 + len(jumd)).to_bytes(4, "big") + b"jumd" + jumd
    inner = (5000).to_bytes(4, "big") + b"cbor" + b"\xa1" * 20
    store = (8 + len(jumd) + len(inner)).to_bytes(4, "big") + b"jumb" + jumd + inner
    seg = b"JP" + (0x0211).to_bytes(2, "big") + (1).to_bytes(4, "big") + store
    plain = (d / "iptc-allowed.jpg").read_bytes()
    (d / "c2pa-damaged.jpg").write_bytes(plain[:2] + b"\xff\xeb" + (len(seg) + 2).to_bytes(2, "big") + seg + plain[2:])
    return out


class SiteHandler(LoopbackHandler):
    def do_GET(self) -> None:
        path, _ = self.count_hit()
        site = self.server.routes
        if path in site:
            ctype, body = site[path]
            headers = HEADERS.get(path, {})
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        elif path in self.server.errors:
            self.reply(self.server.errors[path], "text/plain", b"no")
        else:
            self.reply(404, "text/plain", b"not found")


def site(images: dict[str, bytes], *, files: dict[str, bytes] | None = None, errors: dict[str, int] | None = None
         ) -> LoopbackServer:
    """A loopback site: ``images`` (path -> bytes, served with :data:`HEADERS`) and its reservation files."""
    files = {"/robots.txt": ROBOTS, "/ai.txt": AI_TXT, "/.well-known/tdmrep.json": TDMREP} if files is None else files
    routes = {p: ("image/png" if p.endswith(".png") else "image/jpeg", b) for p, b in images.items()}
    routes.update({p: ("application/json" if p.endswith(".json") else "text/plain", b) for p, b in files.items()})
    server = LoopbackServer(SiteHandler, routes)
    server.errors = errors or {}
    return server


def site_images() -> dict[str, bytes]:
    """The site's images: a different sample photo per path (none of them carries embedded metadata)."""
    out = {}
    for i, path in enumerate(HEADERS):
        src = PHOTOS[6 + i]
        buf = io.BytesIO()
        with Image.open(src) as im:
            im.convert("RGB").save(buf, "PNG" if path.endswith(".png") else "JPEG", quality=90)
        out[path] = buf.getvalue()
    return out


def write_manifest(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "url", "path"])
        w.writerows(rows)
    return path

