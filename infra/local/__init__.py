"""YMERA local runtime: the whole platform on one machine, no Docker, no cloud.

`python -m infra.local` (what `make run` calls) prepares a development
environment, starts an AWS endpoint (embedded moto unless `AWS_ENDPOINT_URL`
points at LocalStack), runs migrations, bootstraps the queues from
`infra.manifest`, serves the Chalice app over HTTP and drives the `functions/`
handlers from their queues and schedules with Lambda-shaped events.

Development tooling only: it lives outside `chalicelib/` and `functions/` so it
is never packaged for Lambda. Importing this package is cheap on purpose (the
heavy imports happen in the submodules that need them).
"""
