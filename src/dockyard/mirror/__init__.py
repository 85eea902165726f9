"""Pull-through mirrors of upstream registries (issue 11): ``upstream`` (the HTTP client),
``service`` (pull-through of manifests and blobs), ``stream`` (a blob stored while it is
served), ``bound`` (``mirror_max_size``, reports, evictions through the reclamation pipeline)."""
