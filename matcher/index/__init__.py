"""The index on disk: the FAISS binary index of codes (binary.py), the SQLite catalog of items and entries
(catalog.py) and the index directory that keeps both in step (store.py). FAISS ids are catalog entry ids."""
