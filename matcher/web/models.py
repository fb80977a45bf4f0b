"""The JSON shapes of the web API (request and response models) and its one error type."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional
from pydantic import BaseModel, Field


#: Catalog ids are SQLite integers: anything larger is refused by validation (422), never reaches SQLite.
MAX_ID = 2 ** 63 - 1


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers


# --- request and response models (they make the OpenAPI page) ----------------------------
class HashIn(BaseModel):
    kind: str = Field(max_length=64, description="variant name from the recipe, e.g. id/full, mirror/c80")
    hash: str = Field(max_length=256, description="the code in hex (16 digits for 64-bit pHash)")


class PhotoIn(BaseModel):
    id: str = Field(max_length=256, description="any client label, echoed back")
    hashes: list[HashIn] = Field(description="first id/full (the whole photo), then any variants")


class SearchIn(BaseModel):
    photos: list[PhotoIn]
    threshold: Optional[int] = Field(None, ge=0, le=64, description="largest Hamming distance (<= the server's)")
    thumbnails: bool = Field(True, description="include each candidate entry's 64x64 verification thumbnail")


class ItemOut(BaseModel):
    id: int
    dataset: str
    key: str
    url: Optional[str] = None
    page_url: Optional[str] = None
    owner: Optional[str] = None
    license: Optional[str] = None
    title: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    hash: Optional[str] = None


class TryOut(BaseModel):
    distance: int
    variant: str
    entry: str
    how: str = Field(description="how the copy differs from the photo when this try verifies, in words")


class CandidateOut(BaseModel):
    item: ItemOut
    tries: list[TryOut] = Field(description="best first: verify in this order")
    thumbs: dict[str, Optional[str]] = Field(description="entry kind -> base64 PNG (64x64 grey), or null")


class PhotoOut(BaseModel):
    id: str
    candidates: list[CandidateOut]


class SearchOut(BaseModel):
    threshold: int
    results: list[PhotoOut]


class Requester(BaseModel):
    name: Optional[str] = Field(None, max_length=200)
    email: Optional[str] = Field(None, max_length=200)
    address: Optional[str] = Field(None, max_length=500)
    country: Optional[str] = Field(None, max_length=100)


class LookupIn(BaseModel):
    flickr_user: str = Field(min_length=1, max_length=300,
                             description="a Flickr user name, path alias, NSID (12345678@N01) or profile URL")


class LettersIn(BaseModel):
    items: list[Annotated[int, Field(ge=0, le=MAX_ID)]] = Field(description="catalog ids of the matched items",
                                                               max_length=100000)
    template: Literal["list", "gdpr", "bipa"] = "list"
    requester: Optional[Requester] = None


def _item_json(it) -> dict[str, Any]:
    return {"id": it.id, "dataset": it.dataset, "key": it.key, "url": it.url, "page_url": it.page_url,
            "owner": it.owner, "license": it.license, "title": it.title, "width": it.width, "height": it.height,
            "hash": it.hash}
