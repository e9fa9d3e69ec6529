"""Schema revisions, oldest first (see each revision and its down_revision)."""
