"""The opt-out registry by content: a person registers the codes of their photos (photos.py) in a registry
file (registry.py); dataset images are confirmed against it (confirm.py) when a manifest is filtered
(filter.py), an index is added to or cleaned (remove.py)."""

from matcher.optout.registry import CONFIRM, DEFAULT_CONFIRM_THRESHOLD, DEFAULT_THRESHOLD, FORMAT, FORMAT_VERSION, MAX_TRIES, Registry, RegistryCode, RegistryEntry, locked
from matcher.optout.photos import confirm_code, photo_codes, register_photos
from matcher.optout.confirm import Hit, Screen, confirm_distance, filter_batch, screen_entries, screened_index_batch
from matcher.optout.filter import FilterStats, LOG_COLUMNS, filter_manifest
from matcher.optout.remove import remove_matching, remove_registered

__all__ = ["FORMAT", "FORMAT_VERSION", "CONFIRM", "DEFAULT_THRESHOLD", "DEFAULT_CONFIRM_THRESHOLD", "MAX_TRIES", "RegistryCode", "RegistryEntry", "Registry", "Hit", "Screen", "photo_codes", "register_photos", "confirm_code", "confirm_distance", "screen_entries", "screened_index_batch", "filter_batch", "FilterStats", "filter_manifest", "remove_matching", "remove_registered", "LOG_COLUMNS", "locked"]
