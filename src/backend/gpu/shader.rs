//! WGSL modules: a kernel's `Spec` (its file under `shaders/`, the shared declarations it needs,
//! the flags and numbers it is specialised with), the tiny preprocessor that specialises one
//! source (`//#if FLAG`, `//#for` tiles, constants emitted from Rust), and what is read back from
//! the source: its bindings and its `struct Params`, which `Recorder::push` checks against the
//! Rust struct given for it (`Params`), so neither side is copied by hand.
//!
//! Glossary: a tile is the `TILE_ROWS` × `TILE_TOKENS` block of work one invocation keeps in
//! registers (`//#for r`, `//#for t`); a define is a `const NAME: u32` emitted into the module
//! from the Rust constant that owns the number.

use crate::core::flaw::Flaw;
use crate::core::quant::GgmlType;

/// Invocations per workgroup of every kernel (`@workgroup_size(64)`), except `argmax` (256, one
/// workgroup) and the online attention (one subgroup).
pub const WORKGROUP: u32 = 64;

const COMMON: &str = include_str!("../../../shaders/common.wgsl");
const QUANT: &str = include_str!("../../../shaders/quant.wgsl");

/// A kernel's WGSL module and how it is specialised: everything about it but its bindings and
/// params, which are read from the source.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Names the pipeline (and, with the flags and numbers, the pipeline cache's entry).
    pub label: String,
    /// The kernel's own file.
    file: &'static str,
    /// Declarations between the prelude and the file (`quant.wgsl` for weight readers, …).
    shared: Vec<(&'static str, &'static str)>,
    /// `//#if` flags switched on besides `subgroups`.
    flags: Vec<&'static str>,
    /// The tile (rows, tokens) that `//#for` blocks repeat over.
    tile: Option<(u32, u32)>,
    /// `const NAME: u32 = V;` lines emitted at the top of the module.
    defines: Vec<(String, u32)>,
    /// Pipeline-overridable constants.
    pub constants: Vec<(&'static str, f64)>,
}

impl Spec {
    pub fn new(label: impl Into<String>, file: &'static str) -> Self {
        Spec { label: label.into(), file, shared: Vec::new(), flags: Vec::new(), tile: None, defines: Vec::new(), constants: Vec::new() }
    }

    /// Prepends the shared declarations of file `name` (after the prelude).
    pub fn shared(mut self, name: &'static str, src: &'static str) -> Self {
        self.shared.push((name, src));
        self
    }

    /// Reads weights of type `t` through the shared block decoder (`WTYPE` fixed per pipeline;
    /// the type ids it compares against come from `GgmlType`).
    pub fn weights(mut self, t: GgmlType) -> Self {
        self.shared.push(("quant.wgsl", QUANT));
        for ty in GgmlType::ALL {
            self.defines.push((format!("T_{}", ty.name()), ty.id()));
        }
        self.constant("WTYPE", t.id())
    }

    /// A pipeline-overridable constant.
    pub fn constant(mut self, name: &'static str, v: u32) -> Self {
        self.constants.push((name, v as f64));
        self
    }

    /// A `const NAME: u32` of the module, from the Rust constant that owns the number.
    pub fn define(mut self, name: &str, v: u32) -> Self {
        self.defines.push((name.to_string(), v));
        self
    }

    /// Switches `//#if flag` on.
    pub fn flag(mut self, flag: &'static str, on: bool) -> Self {
        if on {
            self.flags.push(flag);
            self.label.push_str(&format!("_{flag}"));
        }
        self
    }

    /// `//#for` blocks repeated over a tile of `rows` × `tokens`.
    pub fn tile(mut self, rows: u32, tokens: u32) -> Self {
        self.tile = Some((rows, tokens));
        self.label.push_str(&format!("_{rows}x{tokens}"));
        self
    }

    /// What tells two pipelines apart: the label and every number and flag.
    pub fn key(&self) -> String {
        let shared: Vec<&str> = self.shared.iter().map(|s| s.0).collect();
        format!("{}|{shared:?}|{:?}|{:?}|{:?}|{:?}", self.label, self.flags, self.tile, self.defines, self.constants)
    }

    /// The WGSL module: defines, prelude, shared declarations, the kernel's file, specialised
    /// for subgroups or not (see `specialise`).
    pub fn source(&self, subgroups: bool) -> String {
        let mut flags = self.flags.clone();
        if subgroups {
            flags.push("subgroups");
        }
        let flaws = Flaw::CODES.iter().map(|&(n, v)| (n.to_string(), v));
        let mut text: String = flaws.chain(self.defines.iter().cloned()).map(|(n, v)| format!("const {n}: u32 = {v}u;\n")).collect();
        for part in [COMMON].into_iter().chain(self.shared.iter().map(|s| s.1)).chain([self.file]) {
            text.push_str(part);
            text.push('\n');
        }
        let mut src = specialise(&text, &flags);
        if let Some((rows, tokens)) = self.tile {
            src = expand_tiles(&src, rows, tokens);
        }
        // Browsers want the extension enabled in the module; naga natively rejects the line.
        if subgroups && cfg!(target_arch = "wasm32") {
            format!("enable subgroups;\n{src}")
        } else {
            src
        }
    }
}

/// Keeps the lines of one variant of a shader: between `//#if FLAG` and `//#else` (or
/// `//#endif`) when FLAG is in `flags`, between `//#else` and `//#endif` otherwise; blocks nest.
/// One source serves every variant; the plain one never names a subgroup built-in, so it
/// compiles everywhere. Flags: `subgroups`, `kv_f16`, and the fusions a kernel offers.
pub fn specialise(src: &str, flags: &[&str]) -> String {
    let mut out = String::with_capacity(src.len());
    // Per open block: (its flag is on, the enclosing blocks keep their lines).
    let mut open: Vec<(bool, bool)> = Vec::new();
    let mut keep = true;
    for line in src.lines() {
        let t = line.trim();
        if let Some(flag) = t.strip_prefix("//#if ") {
            let on = flags.contains(&flag.trim());
            open.push((on, keep));
            keep = keep && on;
            continue;
        }
        match (t, open.last()) {
            ("//#else", Some(&(on, outer))) => keep = outer && !on,
            ("//#endif", Some(&(_, outer))) => {
                keep = outer;
                open.pop();
            }
            _ if keep => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// Repeats the lines between `//#for r` (or `t`, or `r t`) and `//#end` once per row r < `rows`,
/// token t < `tokens`, or pair, with `$r` and `$t` replaced by the numbers, and declares the tile
/// as `const TILE_ROWS` and `const TILE_TOKENS`: straight-line code with named variables, which a
/// compiler keeps in registers where it would put an indexed array in memory.
pub fn expand_tiles(src: &str, rows: u32, tokens: u32) -> String {
    let mut out = format!("const TILE_ROWS: u32 = {rows}u;\nconst TILE_TOKENS: u32 = {tokens}u;\n");
    let mut lines = src.lines();
    while let Some(line) = lines.next() {
        let Some(over) = line.trim().strip_prefix("//#for ") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "//#end").collect();
        let rs = if over.contains('r') { rows } else { 1 };
        let ts = if over.contains('t') { tokens } else { 1 };
        for r in 0..rs {
            for t in 0..ts {
                for l in &body {
                    out.push_str(&l.replace("$r", &r.to_string()).replace("$t", &t.to_string()));
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// What a binding is, read from its WGSL declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// `var<storage, read_write>`
    Out,
    /// `var<storage, read>`
    In,
    /// `var<uniform> p: Params`, a 256-byte slot in the params arena.
    Params,
    /// `var<uniform> step: Step` (first position, token count), bound with a dynamic offset.
    Step,
}

/// The bindings a module declares, in binding order: (number, slot) of each `@group(0)
/// @binding(number) var<…> name` (numbers may skip: a variant leaves out what it does not use).
/// Storage buffers are outputs (read_write) or inputs (read); uniforms are the params slot, or
/// the step table when named `step`.
pub fn bindings(src: &str) -> Vec<(u32, Slot)> {
    let mut slots: Vec<(u32, Slot)> = src
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("@group(0) @binding(")?;
            let (i, decl) = rest.split_once(')')?;
            let slot = if decl.contains("var<storage, read_write>") {
                Slot::Out
            } else if decl.contains("var<storage, read>") {
                Slot::In
            } else if decl.contains("var<uniform> step") {
                Slot::Step
            } else {
                Slot::Params
            };
            Some((i.parse().ok()?, slot))
        })
        .collect();
    slots.sort_by_key(|s| s.0);
    slots
}

/// The slots of `bindings`, in order.
pub fn slots(src: &str) -> Vec<Slot> {
    bindings(src).into_iter().map(|b| b.1).collect()
}

/// The fields of `struct NAME { … }` in a module, in order: (name, WGSL type).
pub fn struct_fields(src: &str, name: &str) -> Option<Vec<(String, String)>> {
    let start = src.find(&format!("struct {name} {{"))?;
    let body = &src[start..];
    let body = &body[body.find('{')? + 1..body.find('}')?];
    Some(
        body.lines()
            .map(|l| l.split("//").next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let (n, t) = l.trim_end_matches(',').split_once(':')?;
                Some((n.trim().to_string(), t.trim().to_string()))
            })
            .collect(),
    )
}

/// A kernel's uniform parameters: a `#[repr(C)]` struct of u32 and f32 fields in the order,
/// with the names and types, of the WGSL `struct Params` it is bound to. Written with
/// `params!`, which lists the fields for the check at record time.
pub trait Params: bytemuck::Pod {
    /// (name, Rust type) of each field, in order.
    const FIELDS: &'static [(&'static str, &'static str)];
}

/// Refuses a Rust params struct that does not match the WGSL struct of a module: the same
/// fields, names and 4-byte scalar types in the same order (a trailing `_pad` aside).
pub fn check_params(label: &str, wgsl: &[(String, String)], rust: &[(&str, &str)]) -> Result<(), String> {
    let rust: Vec<_> = rust.iter().filter(|(n, _)| !n.starts_with("_pad")).collect();
    let same = wgsl.len() == rust.len() && wgsl.iter().zip(&rust).all(|((wn, wt), (rn, rt))| wn == rn && wt == rt);
    if same {
        return Ok(());
    }
    let show = |f: Vec<String>| f.join(", ");
    Err(format!(
        "{label}: the Rust params ({}) do not match the shader's `struct Params` ({})",
        show(rust.iter().map(|(n, t)| format!("{n}: {t}")).collect()),
        show(wgsl.iter().map(|(n, t)| format!("{n}: {t}")).collect())
    ))
}

/// Declares a kernel's params struct (see `Params`):
/// `params! { /// doc \n pub struct Glu { pub n: u32, pub act: u32 } }`.
#[macro_export]
macro_rules! params {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
        impl $crate::backend::gpu::shader::Params for $name {
            const FIELDS: &'static [(&'static str, &'static str)] = &[$((stringify!($f), stringify!($t))),*];
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specialisation_keeps_one_side() {
        let src = "a\n//#if subgroups\nb\n//#else\nc\n//#endif\nd\n";
        assert_eq!(specialise(src, &["subgroups"]), "a\nb\nd\n");
        assert_eq!(specialise(src, &[]), "a\nc\nd\n");
        let nested = "a\n//#if x\nb\n//#if y\nc\n//#else\nd\n//#endif\ne\n//#else\nf\n//#endif\ng\n";
        assert_eq!(specialise(nested, &["x", "y"]), "a\nb\nc\ne\ng\n");
        assert_eq!(specialise(nested, &["x"]), "a\nb\nd\ne\ng\n");
        assert_eq!(specialise(nested, &["y"]), "a\nf\ng\n");
        let tiles = expand_tiles("x\n//#for r t\nv$r_$t\n//#end\ny\n", 2, 2);
        assert!(tiles.contains("const TILE_ROWS: u32 = 2u;"));
        assert!(tiles.contains("v0_0\nv0_1\nv1_0\nv1_1\ny"));
    }

    #[test]
    fn params_are_read_from_the_shader() {
        let src = "struct Params {\n    n: u32,    // elements\n    eps: f32,\n}\n";
        let f = struct_fields(src, "Params").unwrap();
        assert_eq!(f, vec![("n".to_string(), "u32".to_string()), ("eps".to_string(), "f32".to_string())]);
        assert!(check_params("k", &f, &[("n", "u32"), ("eps", "f32")]).is_ok());
        let e = check_params("k", &f, &[("eps", "f32"), ("n", "u32")]).unwrap_err();
        assert!(e.contains("do not match"), "{e}");
        assert!(check_params("k", &f, &[("n", "u32"), ("eps", "f32"), ("_pad", "u32")]).is_ok());
    }

    #[test]
    fn bindings_are_read_from_the_shader() {
        let src = "@group(0) @binding(1) var<storage, read> w: array<u32>;\n@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n@group(0) @binding(2) var<uniform> p: Params;\n@group(0) @binding(3) var<uniform> step: Step;\n";
        assert_eq!(slots(src), vec![Slot::Out, Slot::In, Slot::Params, Slot::Step]);
    }
}
