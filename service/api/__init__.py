"""The HTTP edge: routers, schemas, views, problem+json errors, middleware, OpenAPI, docs."""
