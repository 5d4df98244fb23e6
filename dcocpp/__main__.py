import sys

from dcocpp.cli import main

sys.exit(main())
