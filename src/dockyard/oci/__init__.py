"""Pure OCI logic: digests, names, media types, manifest parsing. No I/O here."""
