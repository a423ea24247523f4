"""The window's dialogs: settings, plugins, prompt inspector."""
