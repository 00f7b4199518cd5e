"""The HTTP API of the records service: one router per resource."""
