"""Run flowvision from a checkout without installing: `python cli.py --help`."""
from flowvision.cli import main

main()
