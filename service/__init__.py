"""scratchnet's HTTP service: a FastAPI app over the engine; training runs in worker processes.

Each concern has one home, and imports point downward only (api -> state -> execution ->
engine):

    main         create_app(): the store, dispatcher and lifecycles wired to the API; lifespan
    __main__     python -m service [--host H] [--port P]
    settings     Settings, from SCRATCHNET_* environment variables
    errors       the typed error tree every layer raises (service.api.problems answers it)
    metrics      Prometheus metrics of one app instance
    api/         the HTTP edge: routers (one per resource), request/response schemas, views,
                 problem+json errors, middleware, OpenAPI and offline docs, pictures, SSE
    state/       what the service keeps and how work moves: records, the Store interface
                 (in memory), the one lifecycle of training work (jobs and sweeps are its two
                 kinds), limits, idempotency, event-stream subscribers
    execution/   where training runs: the executor interface and its typed events, the
                 dispatcher that owns it, the local process pool and its worker loop, tasks
"""
