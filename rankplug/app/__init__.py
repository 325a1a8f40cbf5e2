"""The application built on the core: data, the trainer, run directories, evaluation, reports, the demo and the
``rankplug`` command.

The core (:mod:`rankplug.functional`, :mod:`rankplug.losses`, :mod:`rankplug.heads`, :mod:`rankplug.methods`,
:mod:`rankplug.stages`) never imports anything from here; a host program that only wants the losses and the stage
manager never loads this package.
"""
