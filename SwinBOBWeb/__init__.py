"""The web face of SwinBOB's QC review: ``swinbob review OUT`` serves a cohort run's (or
``swinbob solf run``'s) QC queue in a browser, on real Slicer views (trame-slicer on slicer-core).

* :mod:`.folder`: the review folder (what is read and written, and nothing from the browser
  names a path) and the access token.
* :mod:`.desk`: the queue shared by everyone connected: filters, steps, decisions through
  ``SwinBOBModule.review`` (the Slicer panel's log), who else decided an item.
* :mod:`.app`: the trame app: views, queue, buttons, correction (trame-slicer's segment editor).
* :mod:`.server`: start, guard and stop the server.

Like the Slicer panel, this face only binds widgets to the Qt-free logic of ``SwinBOBModule``
(``review``, ``samples``, ``correction``); it needs the ``web`` extra (``pip install -e '.[web]'``).
"""
