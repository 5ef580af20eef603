#!/usr/bin/env python3
"""Trunk post-build hook, on the staging dir (TRUNK_STAGING_DIR):

0. renames the page's modules (js/, copied from www/js/) to js-<hash of their names and contents>/
   and points index.html's entry script there, so that a page of one build never runs modules of
   another from a cache (the service worker's or the browser's); their relative imports still hold;
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


def tree_digest(base, files):
    """sha256 over the names (relative to `base`) and contents of `files`."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(base).as_posix().encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


modules = stage / "js"
entry = 'src="js/app.js"'
if html.count(entry) != 1 or not (modules / "app.js").is_file():
    raise SystemExit(f"post-build: index.html must load the page's modules with exactly one {entry}")
hashed = f"js-{tree_digest(modules, sorted(p for p in modules.rglob('*') if p.is_file()))}"
modules.rename(stage / hashed)
html = html.replace(entry, f'src="{hashed}/app.js"')
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

shell = sorted(p for p in stage.rglob("*") if p.is_file() and p.relative_to(stage).parts[0] != "models" and p.name != "sw.js")
files = [p.relative_to(stage).as_posix() for p in shell]
template = (root / "www" / "sw.js").read_text()
out = template.replace("__VERSION__", tree_digest(stage, shell)).replace("__SHELL__", json.dumps(["./"] + files))
(stage / "sw.js").write_text(out)
