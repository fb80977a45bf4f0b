"""Where a dataset image came from and who to write to: Flickr identities parsed from URLs, identity
joins, removal-request letters. Pure functions over catalog values; no index access."""
