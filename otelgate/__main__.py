import sys

from otelgate.cli import main

sys.exit(main())
