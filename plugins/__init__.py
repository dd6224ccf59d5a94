"""lawlab's built-in plugins (installed as ``lawlab_plugins``).

Each module here is one plugin, found through an entry point of group ``lawlab`` in
lawlab's own package metadata, the same way a third-party plugin is found.
"""
