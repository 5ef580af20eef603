#!/usr/bin/env python3
"""Trunk post-build hook, on the staging dir (TRUNK_STAGING_DIR):

1. writes sw.js from www/sw.js with the app shell (every built file except models/) and a version
   hashed from their names and contents, so a new build replaces the old cache cleanly;
2. adds a Content-Security-Policy to index.html that allows only the site itself, wasm
   compilation, and (by its sha256) the one inline script Trunk writes to start the wasm module.
"""
import base64
import hashlib
import json
import os
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
stage = pathlib.Path(os.environ["TRUNK_STAGING_DIR"])

index = stage / "index.html"
html = index.read_text()
inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", html, flags=re.S)
hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'" for s in inline)
csp = (
    "default-src 'self'; "
    f"script-src 'self' 'wasm-unsafe-eval' {hashes}; "
    "style-src 'self'; img-src 'self'; connect-src 'self'; worker-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'"
)
meta = f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
html = html.replace('<meta charset="utf-8">', '<meta charset="utf-8">\n  ' + meta, 1)
index.write_text(html)

files = sorted(
    p.relative_to(stage).as_posix()
    for p in stage.rglob("*")
    if p.is_file() and p.relative_to(stage).parts[0] != "models" and p.name != "sw.js"
)
digest = hashlib.sha256()
for f in files:
    digest.update(f.encode())
    digest.update((stage / f).read_bytes())
template = (root / "www" / "sw.js").read_text()
out = template.replace("__VERSION__", digest.hexdigest()[:16]).replace("__SHELL__", json.dumps(["./"] + files))
(stage / "sw.js").write_text(out)
