"""The per-image pipeline (photo.py: decode -> regions/variants -> codes, and verification of candidates)
and the worker processes that run it (pool.py)."""
