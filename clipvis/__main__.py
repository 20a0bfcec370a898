import sys

from clipvis.cli import main

sys.exit(main())
