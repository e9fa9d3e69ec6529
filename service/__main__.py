"""`python -m service [--host H] [--port P]`: serve the API with uvicorn (one process; training
scales through the executor's worker processes, never through more uvicorn workers: one
process holds the store)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
from types import FrameType

import uvicorn

from service import logs
from service.main import create_app
from service.settings import Settings

# Seconds uvicorn waits for open connections (event streams end by themselves) at shutdown.
GRACEFUL_SHUTDOWN_SECONDS = 10

logger = logging.getLogger("service")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _exit_zero(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", help="address to bind (default: SCRATCHNET_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: SCRATCHNET_PORT or 8000)")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    settings = Settings(**overrides)
    logs.configure(settings.log_format, settings.log_level)
    app = create_app(settings)
    if not app.state.scratchnet.keys.enabled and not _loopback(settings.host):
        logger.warning(
            "serving on %s without API keys: anyone who can reach this port can read, train "
            "and delete everything; set SCRATCHNET_API_KEYS (see README, Security)",
            settings.host,
        )
    # uvicorn shuts down gracefully on SIGTERM, restores the handler it found and re-raises the
    # signal, so that the process would die of it (status -15, 143 under an init). A stop is
    # the normal end of a service (`docker stop`, systemd, Kubernetes): this handler makes it
    # exit 0 once the shutdown is done. SIGINT (Ctrl-C) keeps uvicorn's behaviour.
    signal.signal(signal.SIGTERM, _exit_zero)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level,
        log_config=None,  # service.logs formats uvicorn's lines too
        access_log=False,  # service.api.middleware logs one line per request
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


if __name__ == "__main__":
    main()
