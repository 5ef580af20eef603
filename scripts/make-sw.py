#!/usr/bin/env python3
"""Trunk post-build hook: writes sw.js into the staging dir from www/sw.js, filling in the app
shell (every built file except models/) and a version hashed from their names and contents."""
import hashlib
import json
import os
import pathlib

root = pathlib.Path(__file__).resolve().parent.parent
stage = pathlib.Path(os.environ["TRUNK_STAGING_DIR"])
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
