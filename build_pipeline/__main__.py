from build_pipeline.cli import main

raise SystemExit(main())
