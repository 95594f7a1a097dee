"""``python -m speechbrain_cald.convert.share``: see
:func:`speechbrain_cald.convert.share.cli.main`.
"""

import sys

from speechbrain_cald.convert.share.cli import main

sys.exit(main())
