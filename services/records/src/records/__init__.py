"""The records service: patients and their allergies, event-sourced.

``domain`` holds the aggregates and their rules, ``application`` the commands and
queries on the event store, ``api`` the HTTP routes, ``relay`` the mapping of
domain events to the integration events of the catalogue.
"""
