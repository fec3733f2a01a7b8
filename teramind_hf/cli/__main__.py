"""`python -m teramind_hf.cli ...` (what `accelerate launch -m teramind_hf.cli generate ...` runs)."""

import sys

from . import main

sys.exit(main())
