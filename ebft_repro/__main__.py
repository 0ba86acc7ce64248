import sys

from ebft_repro.experiments.cli import main

sys.exit(main())
