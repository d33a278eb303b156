"""Shared building blocks: errors, versioned configs, registries, the environment manifest."""
