"""The durable outbox: fan-out, claims, dispatch and delivery reports."""
