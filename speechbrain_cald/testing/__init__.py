"""Offline stand-ins (tiny random models, tiny corpora in official layouts) for tests and first tries."""
