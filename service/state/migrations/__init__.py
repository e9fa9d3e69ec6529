"""Alembic migrations of the SQLite store's schema (`service.state.sqlite_store`).

Each revision in `versions/` upgrades the previous schema; `SQLiteStore` applies them on start.
"""
