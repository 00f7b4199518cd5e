"""The read side of the EHR: projections from the event log into rebuildable read models."""
