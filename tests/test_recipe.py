"""The recipe the web page follows describes exactly the variants the CLI searches."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from matcher.engine.recipe import expand, recipe
from matcher.imaging.regions import query_variants


@pytest.mark.parametrize("size", [(512, 384), (384, 512), (512, 288), (300, 500), (160, 120), (100, 77), (48, 640)])
def test_expand_equals_query_variants(size):
    rec = json.loads(json.dumps(recipe()))  # as the page receives it
    _, variants = query_variants(Image.new("L", size))
    got = expand(rec, *size)
    assert [(v.name, v.source, v.box) for v in variants] == [(n, s, b) for n, s, b in got]


def test_recipe_without_regions_is_the_whole_photo():
    class Store:
        hasher = None
        regions = False

    rec = recipe(Store())
    assert [v["name"] for v in rec["variants"]] == ["id/full"] and rec["faces"]["enabled"] is False
