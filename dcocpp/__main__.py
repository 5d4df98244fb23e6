import sys

from dcocpp.cli.commands import main

sys.exit(main())
