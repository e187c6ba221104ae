"""``python -m fastapi_channels``: the ``fastapi-channels`` command."""

import sys

from fastapi_channels.cli import main

sys.exit(main())
