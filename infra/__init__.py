"""Infrastructure for the functions/ deploy unit: manifest, template, bootstrap, build."""
