"""Local stand-ins for Google Cloud: fakes, emulator runner, forwarder, workflow interpreter.

Everything here replaces, on loopback, a part of Google Cloud that cannot run on a
developer's machine (the Workflows callback API, the metadata server, Eventarc's
delivery) or starts the real thing that can (the Pub/Sub emulator, functions-framework).
``tests``, ``bench`` and ``scripts`` import it; it imports none of them.
"""
