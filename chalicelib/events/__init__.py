"""The event ledger and what reads it (docs/events.md): triggers write events, the notifier delivers them,
GET /events and the long-poll read them."""
