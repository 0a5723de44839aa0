import sys

from uvxlan.cli import main

sys.exit(main())
