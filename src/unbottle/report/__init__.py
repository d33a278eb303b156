"""Turning stored results into things people read: console tables and JSON documents."""
