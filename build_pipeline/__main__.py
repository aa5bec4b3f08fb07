"""`python -m build_pipeline`: the build CLI (cli.py)."""

from build_pipeline.cli import main

raise SystemExit(main())
