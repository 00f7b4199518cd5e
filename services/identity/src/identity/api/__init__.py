"""HTTP routes of the identity service, one router per resource."""
