"""App templates of `aicd init` (package data): one directory per template, its `template.yaml` (what it is,
how it builds) and `files/` (copied into the new app, `__APP__` replaced by the app's name). `_chart/` is
the small Helm chart every template's GitOps layout uses."""
