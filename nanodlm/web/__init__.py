"""Watching the model write: the web demo (``nanodlm serve``), the terminal live view, HTML / GIF animations."""
