"""``python -m sequoia_clinic``: the same command line as the ``sequoia-clinic`` script."""

from sequoia_clinic.cli.main import run

if __name__ == "__main__":
    run()
