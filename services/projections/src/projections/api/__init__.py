"""The HTTP API of the read side: chart reads and searches, the audit trail, status."""
