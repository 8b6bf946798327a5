import sys

from finance_core.cli import main

sys.exit(main())
