"""The browser app, `mask2anomaly app` (issue 18): `analysis` computes and caches, without
Gradio; `files` reads uploads and writes downloads, examples and annotated videos; `page` is the
Gradio page and its HTTP API (the optional `app` extra)."""
