"""Test helpers shared by tests/ and bench/: the fixture plugin, tiny models, servers, Chromium."""
