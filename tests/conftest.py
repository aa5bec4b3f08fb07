"""The suite's fixtures live in one plugin, testing/fixtures.py (helpers: the testing/ package)."""

pytest_plugins = ["testing.fixtures"]
