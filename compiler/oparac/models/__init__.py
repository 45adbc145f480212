"""Model references (zoo names, import paths, files) and the model zoo."""
