"""One router per resource: datasets, jobs, models, and the operations endpoints."""
