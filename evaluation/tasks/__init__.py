"""The lm-eval task folder (YAMLs + utils.py hooks); a package only so that installs ship it."""
