#!/usr/bin/env python3
"""Trunk post-build hook, on the staging dir (TRUNK_STAGING_DIR):

0. points the engine worker (js/worker.js) at this build's wasm-bindgen glue, kvscope-<hash>.js
   (Trunk injects no start-up script: the worker alone instantiates the wasm module); renames the page's modules (js/, copied from www/js/) to js-<hash of their names and contents>/
   and points index.html's entry script there, so that a page of one build never runs modules of
   another from a cache (the service worker's or the browser's); their relative imports still hold.
   js/kvscope.js stays, as a one-line module that re-exports this build's JavaScript API, so that
   other pages import it from an address that does not change;
1. writes sw.js from www/sw.js with the app shell (every built file except models/) and a version
   hashed from their names and contents, so a new build replaces the old cache cleanly;
2. adds a Content-Security-Policy to index.html that allows only the site itself (its engine
   worker included), wasm compilation, and (by their sha256) any inline scripts;
3. writes models/manifest.json, the models the site ships (every models/*.gguf): file, name (the
   GGUF's general.name), bytes, header_bytes (where the tensor data starts: the page fetches only
   that much to show what a model needs before loading it) and sha256; it is part of the app shell.
"""
import base64
import hashlib
import json
import os
import pathlib
import re
import struct

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


def replace_once(text, old, new, where):
    if text.count(old) != 1:
        raise SystemExit(f"post-build: {where} must contain exactly one {old}")
    return text.replace(old, new)


modules = stage / "js"
worker = modules / "worker.js"
glues = [p for p in stage.glob("kvscope-*.js") if re.fullmatch(r"kvscope-[0-9a-f]+\.js", p.name)]
if len(glues) != 1 or not worker.is_file():
    raise SystemExit(f"post-build: expected one wasm-bindgen glue kvscope-<hash>.js (found {len(glues)}) and js/worker.js")
glue_wasm = glues[0].name.removesuffix(".js") + "_bg.wasm"
if not (stage / glue_wasm).is_file():
    raise SystemExit(f"post-build: {glue_wasm} is missing")
text = replace_once(worker.read_text(), "'../kvscope.js'", f"'../{glues[0].name}'", "js/worker.js")
worker.write_text(replace_once(text, "'../kvscope_bg.wasm'", f"'../{glue_wasm}'", "js/worker.js"))
# Trunk leaves the (inert) rust link in the page when it injects no start-up script.
html = re.sub(r'<link[^>]*\brel="rust"[^>]*>\s*', "", html)

entry = 'src="js/app.js"'
if html.count(entry) != 1 or not (modules / "app.js").is_file():
    raise SystemExit(f"post-build: index.html must load the page's modules with exactly one {entry}")
hashed = f"js-{tree_digest(modules, sorted(p for p in modules.rglob('*') if p.is_file()))}"
modules.rename(stage / hashed)
html = html.replace(entry, f'src="{hashed}/app.js"')
modules.mkdir()
(modules / "kvscope.js").write_text(f"// This build's JavaScript API (README: \"The JavaScript API\").\nexport * from '../{hashed}/kvscope.js';\n")
inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", html, flags=re.S)
hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'" for s in inline)
csp = (
    "default-src 'self'; "
    f"script-src 'self' 'wasm-unsafe-eval'{' ' + hashes if hashes else ''}; "
    "style-src 'self'; img-src 'self'; connect-src 'self'; worker-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'"
)
meta = f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
html = html.replace('<meta charset="utf-8">', '<meta charset="utf-8">\n  ' + meta, 1)
index.write_text(html)


# GGUF metadata value types: struct format of the fixed-size ones; 8 is a string, 9 an array.
GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_header(path):
    """(general.name or None, bytes before the tensor data) of a GGUF v2/v3 file, reading only its
    header; raises ValueError naming what is wrong."""
    with open(path, "rb") as f:
        def take(fmt):
            size = struct.calcsize("<" + fmt)
            raw = f.read(size)
            if len(raw) != size:
                raise ValueError(f"truncated header at byte {f.tell()}")
            return struct.unpack("<" + fmt, raw)[0]

        def string():
            n = take("Q")
            if n > 1 << 30:
                raise ValueError(f"string of {n} bytes at byte {f.tell()}")
            raw = f.read(n)
            if len(raw) != n:
                raise ValueError(f"truncated string at byte {f.tell()}")
            return raw.decode("utf-8", "replace")

        def value(ty):
            if ty == 8:
                return string()
            if ty == 9:
                inner, n = take("I"), take("Q")
                if inner in GGUF_SCALARS:
                    f.seek(n * struct.calcsize("<" + GGUF_SCALARS[inner]), 1)
                else:
                    for _ in range(n):
                        value(inner)
                return None
            if ty not in GGUF_SCALARS:
                raise ValueError(f"unknown metadata type {ty}")
            return take(GGUF_SCALARS[ty])

        if f.read(4) != b"GGUF":
            raise ValueError("not a GGUF file (no GGUF magic)")
        version = take("I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} (kvscope reads 2 and 3)")
        n_tensors, n_kv = take("Q"), take("Q")
        meta = {}
        for _ in range(n_kv):
            key = string()
            meta[key] = value(take("I"))
        for _ in range(n_tensors):
            string()
            n_dims = take("I")
            f.seek(8 * n_dims + 4 + 8, 1)
        alignment = meta.get("general.alignment") or 32
        end = f.tell()
        if end > os.fstat(f.fileno()).st_size:
            raise ValueError("the header runs past the end of the file")
        return meta.get("general.name"), -(-end // alignment) * alignment


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


models_dir = stage / "models"
models_dir.mkdir(exist_ok=True)
shipped = []
for path in sorted(models_dir.glob("*.gguf")):
    try:
        name, header_bytes = gguf_header(path)
    except (OSError, ValueError) as e:
        raise SystemExit(f"post-build: models/{path.name}: {e}")
    shipped.append({
        "file": path.name,
        "name": name or path.stem,
        "bytes": path.stat().st_size,
        "header_bytes": header_bytes,
        "sha256": file_sha256(path),
    })
manifest = models_dir / "manifest.json"
manifest.write_text(json.dumps({"models": shipped}, indent=1) + "\n")

shell = sorted(p for p in stage.rglob("*") if p.is_file() and (p.relative_to(stage).parts[0] != "models" or p == manifest) and p.name != "sw.js")
files = [p.relative_to(stage).as_posix() for p in shell]
template = (root / "www" / "sw.js").read_text()
out = template.replace("__VERSION__", tree_digest(stage, shell)).replace("__SHELL__", json.dumps(["./"] + files))
(stage / "sw.js").write_text(out)
