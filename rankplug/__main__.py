"""``python -m rankplug``: the same as the ``rankplug`` command (:mod:`rankplug.app.cli`)."""

from rankplug.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
