"""The identity service: users, organisations, signing keys and access tokens."""
