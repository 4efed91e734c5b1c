"""`python -m runsense_cli`: the CLI, or a run worker when the first argument is `_worker`."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "_worker":
    # Run workers skip Typer and rich entirely: they start faster and import less.
    from runsense_cli.worker import main as worker_main

    sys.exit(worker_main(sys.argv[2:]))

from runsense_cli.cli import main

main()
