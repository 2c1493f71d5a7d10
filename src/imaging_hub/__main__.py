"""``python -m imaging_hub`` is the ``imaging-hub`` command."""

from imaging_hub.cli import main

main()
