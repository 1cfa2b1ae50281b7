"""Lambda handlers deployed by infra/ (not by Chalice). Each parses its event,
calls one chalicelib service and maps the result."""
