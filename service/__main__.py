"""`python -m service [--host H] [--port P]`: serve the API with uvicorn (one process; training
scales through the executor's worker processes, never through more uvicorn workers, because the
registry lives in this process's memory)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

import uvicorn

from service.main import create_app
from service.settings import Settings

# Seconds uvicorn waits for open connections (event streams end by themselves) at shutdown.
GRACEFUL_SHUTDOWN_SECONDS = 10


def _exit_zero(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", help="address to bind (default: SCRATCHNET_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: SCRATCHNET_PORT or 8000)")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)-9s %(name)s: %(message)s"
    )
    # uvicorn shuts down gracefully on SIGTERM, restores the handler it found and re-raises the
    # signal, so that the process would die of it (status -15, 143 under an init). A stop is
    # the normal end of a service (`docker stop`, systemd, Kubernetes): this handler makes it
    # exit 0 once the shutdown is done. SIGINT (Ctrl-C) keeps uvicorn's behaviour.
    signal.signal(signal.SIGTERM, _exit_zero)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


if __name__ == "__main__":
    main()
