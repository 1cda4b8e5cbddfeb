"""`python -m dicomnode ...`: the same command line as the `dicomnode` script."""
import sys

from dicomnode.cli import main

sys.exit(main())
