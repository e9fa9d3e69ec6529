"""What the service keeps and how training work moves through it (see lifecycle and store)."""
