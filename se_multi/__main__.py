import sys

from se_multi.cli import main

sys.exit(main())
