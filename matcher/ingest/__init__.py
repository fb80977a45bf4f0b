"""Getting dataset images into an index: sources (folders, manifests) and dataset presets, the downloader
with its URL guards, the local ingest loop, and shards for the Dask engine."""
