"""A small soak of a real `python -m service` (the full one: `python -m benchmarks.load_bench`):
repeated renders and train-and-delete cycles leave memory, threads and open files flat."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from benchmarks.load_bench import server, soak

pytestmark = pytest.mark.e2e


def test_renders_and_train_delete_cycles_leave_resources_flat(tmp_path: Path) -> None:
    with server(tmp_path, picture_cache_size="0") as live:
        measured = asyncio.run(soak(live.url, live.process.pid, renders=60, cycles=20))
    for what, (rss_before, threads_before, files_before), (rss, threads, files) in measured:
        assert rss - rss_before < 50, (what, rss_before, rss)
        assert threads <= threads_before + 2, (what, threads_before, threads)
        assert files <= files_before + 4, (what, files_before, files)
