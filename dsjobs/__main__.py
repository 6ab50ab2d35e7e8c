import sys

from dsjobs.cli import main

sys.exit(main())
