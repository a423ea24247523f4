"""The desktop window. The only package that imports PySide6 (and only in its submodules,
so ``desktop_app.ui.hookspecs`` can be loaded by the plugin host without Qt)."""
