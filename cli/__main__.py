"""`python -m cli COMMAND ...`: the facematch entry point without its installed script."""
import sys

from cli import main

sys.exit(main())
