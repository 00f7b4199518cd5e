"""Tests of the gateway (a package of its own name, so module names never clash)."""
