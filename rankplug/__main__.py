"""``python -m rankplug``: the same as the ``rankplug`` command (:mod:`rankplug.cli`)."""

from rankplug.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
