import sys

from triform.cli import main

sys.exit(main())
