"""`python -m lib` is the same as the `reranker-studio` console script."""

from lib.cli import main

raise SystemExit(main())
