"""scratchnet's HTTP service: a FastAPI app over the engine; training runs in worker processes.

Routes stay thin; engine errors become HTTP problems in one module. Modules:

    main        create_app(): routes, error handlers, middleware, offline docs, lifespan
    __main__    python -m service [--host H] [--port P]
    settings    Settings, from SCRATCHNET_* environment variables
    routers/    one router per resource: datasets, jobs, models, operations
    schemas     request and response bodies (XCreate / XPublic / XsPublic)
    views       registry records -> response bodies
    errors      the one mapping of exceptions to RFC 9457 problem+json
    datasets    dataset creation: applicable fields per kind, limits, the engine
    jobs        job state: limits, idempotency, executor events, event-stream wake-ups
    tasks       TrainingTask, the picklable job a worker runs
    registry    the in-memory store of datasets, jobs and models
    pictures    PNGs rendered in threads, with an LRU cache
    metrics     Prometheus metrics and the request-timing middleware
    executor    the Executor interface; process_pool and worker implement it locally
"""
