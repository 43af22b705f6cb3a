"""Integrations built on geventagent's public API, each imported only when you import it."""
