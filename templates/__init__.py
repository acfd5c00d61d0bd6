"""The bundled experiment templates, installed as the package `scientist_templates` (see pyproject.toml).

Only a marker for importlib.resources: each template is a folder of files, never imported from here.
"""
