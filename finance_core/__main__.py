import sys

from finance_core.cli import main
from finance_core.store.files import restrict_umask

restrict_umask()
sys.exit(main())
