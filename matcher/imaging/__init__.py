"""Opening and normalising photos: decoding (with the JPEG fast path), orientation, limits; the regions of a
photo (padding, frames, caption bars), faces and face boxes; the edits the benchmark applies."""
