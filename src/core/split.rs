//! Split GGUF files, as llama.cpp's `llama-gguf-split` writes them and big models are published:
//! `PREFIX-00001-of-00003.gguf` … `PREFIX-00003-of-00003.gguf`, each a GGUF with its own header
//! and tensor table listing its own tensors (offsets within its own data section). The first
//! part holds all the metadata; every part holds `split.no` (u16, 0-based), `split.count` (u16)
//! and `split.tensors.count` (i32: the tensors of all parts together).
//!
//! `join` reads a set as one model: the first part's metadata (less the `split.*` keys) and every
//! part's tensors in order, checked part by part; `split` writes one (`kvscope split`).

use crate::core::gguf::{Gguf, Value, Writer};
use crate::error::{Error, Result};

pub const SPLIT_NO: &str = "split.no";
pub const SPLIT_COUNT: &str = "split.count";
pub const SPLIT_TENSORS: &str = "split.tensors.count";

/// `PREFIX-NNNNN-of-MMMMM.gguf` → (PREFIX, NNNNN − 1, MMMMM), or None for any other name.
pub fn parse_name(name: &str) -> Option<(&str, usize, usize)> {
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(no) || !digits(count) {
        return None;
    }
    let (no, count): (usize, usize) = (no.parse().ok()?, count.parse().ok()?);
    (no >= 1 && no <= count).then_some((prefix, no - 1, count))
}

/// The name of part `i` (0-based) of a set of `count` whose parts are named `PREFIX-…`.
pub fn part_name(prefix: &str, i: usize, count: usize) -> String {
    format!("{prefix}-{:05}-of-{count:05}.gguf", i + 1)
}

/// `split.no` and `split.count` of a header: (0, 1) for a file that is not part of a set.
fn split_keys(g: &Gguf) -> Result<(usize, usize)> {
    let key = |k: &str, default: u64| g.get(k).map_or(Ok(default), |_| g.u64(k));
    let (no, count) = (key(SPLIT_NO, 0)? as usize, key(SPLIT_COUNT, 1)? as usize);
    if count == 0 || no >= count {
        return Err(Error::malformed(format!("metadata key `{SPLIT_NO}`"), format!("part {} of {count}", no + 1)));
    }
    Ok((no, count))
}

/// An empty GGUF of `g`'s version and alignment.
fn writer_like(g: &Gguf) -> Writer {
    let mut w = Writer::new();
    (w.version, w.alignment) = (g.version, g.alignment);
    w
}

/// Tensor `t` of `g` (whose file is `bytes`) written to `w` with its data.
fn copy_tensor(w: &mut Writer, g: &Gguf, bytes: &[u8], t: &crate::core::gguf::TensorInfo) {
    let r = g.tensor_range(t);
    w.tensor(&t.name, &t.dims, t.ty.id(), bytes[r.start as usize..r.end as usize].to_vec());
}

/// How many parts the model whose first file is `g` (named `name`) has: 1 for a single file. A
/// later part given first is refused by name, with the first part's name.
pub fn parts_of(g: &Gguf, name: &str) -> Result<usize> {
    let (no, count) = split_keys(g)?;
    if no != 0 {
        let first = parse_name(name).map_or_else(|| "its first part".to_string(), |(p, _, n)| part_name(p, 0, n));
        return Err(Error::MissingPart {
            name: name.into(),
            why: format!("it is part {} of {count} of a split model: open {first}, with the other parts beside it", no + 1),
        });
    }
    if count > 1 && parse_name(name).is_none_or(|(_, _, n)| n != count) {
        return Err(Error::MissingPart {
            name: name.into(),
            why: format!(
                "it is the first of {count} parts, whose names must end in -00001-of-{count:05}.gguf … -{count:05}-of-{count:05}.gguf"
            ),
        });
    }
    Ok(count)
}

/// The model of a split set as one GGUF: `first` (named `name`), then parts 2.. from
/// `read_part(i, part's name)`, each dropped once its tensors are copied. Checks each part's
/// `split.no` and `split.count`, that no tensor repeats, and that the parts hold
/// `split.tensors.count` tensors.
pub fn join(first: &[u8], name: &str, mut read_part: impl FnMut(usize, &str) -> Result<Vec<u8>>) -> Result<Vec<u8>> {
    let g = Gguf::parse(first)?;
    let count = parts_of(&g, name)?;
    let mut w = writer_like(&g);
    for (k, v) in g.metadata.iter().filter(|(k, _)| !k.starts_with("split.")) {
        w.kv(k, v.clone());
    }
    let mut names = std::collections::BTreeSet::new();
    let mut add = |w: &mut Writer, g: &Gguf, bytes: &[u8]| -> Result<()> {
        for t in &g.tensors {
            if !names.insert(t.name.clone()) {
                return Err(Error::malformed(format!("tensor `{}`", t.name), "appears in two parts of the split model"));
            }
            copy_tensor(w, g, bytes, t);
        }
        Ok(())
    };
    add(&mut w, &g, first)?;
    let prefix = parse_name(name).map_or("", |p| p.0);
    for i in 1..count {
        let part = part_name(prefix, i, count);
        let bytes = read_part(i, &part)
            .map_err(|e| Error::MissingPart { name: part.clone(), why: format!("part {} of {count} cannot be read: {e}", i + 1) })?;
        let p = Gguf::parse(&bytes).map_err(|e| Error::MissingPart { name: part.clone(), why: e.to_string() })?;
        let (no, n) = split_keys(&p)?;
        if (no, n) != (i, count) {
            return Err(Error::MissingPart {
                name: part,
                why: format!("it says it is part {} of {n}, where part {} of {count} belongs", no + 1, i + 1),
            });
        }
        add(&mut w, &p, &bytes)?;
    }
    if let Some(v) = g.get(SPLIT_TENSORS) {
        if v.as_u64() != Some(names.len() as u64) {
            return Err(Error::MissingPart {
                name: name.into(),
                why: format!("the set should hold {} tensors (`{SPLIT_TENSORS}`) but its {count} parts hold {}", v.summary(), names.len()),
            });
        }
    }
    Ok(w.to_bytes())
}

/// A single-file model cut into `parts` parts of whole tensors, each about the same number of
/// tensor bytes, as `llama-gguf-split` writes them: part 1 holds all the metadata, every part
/// its own tensors and the `split.*` keys.
pub fn split(bytes: &[u8], parts: usize) -> Result<Vec<Vec<u8>>> {
    let g = Gguf::parse(bytes)?;
    if split_keys(&g)?.1 > 1 {
        return Err(Error::Option("the model is a part of a split set already".into()));
    }
    if parts == 0 || parts > g.tensors.len() {
        return Err(Error::Option(format!("cannot cut {} tensors into {parts} parts", g.tensors.len())));
    }
    let total: u64 = g.tensors.iter().map(|t| t.size).sum();
    // Part k takes the tensors that start in its share of the bytes, and at least one.
    let mut cuts = vec![0usize];
    let mut seen = 0u64;
    for (i, t) in g.tensors.iter().enumerate() {
        let left = parts - cuts.len();
        if left > 0 && i > *cuts.last().unwrap() && (seen * parts as u64 >= total * cuts.len() as u64 || g.tensors.len() - i == left) {
            cuts.push(i);
        }
        seen += t.size;
    }
    cuts.push(g.tensors.len());
    let keys = |no: usize| {
        [(SPLIT_NO, Value::U16(no as u16)), (SPLIT_COUNT, Value::U16(parts as u16)), (SPLIT_TENSORS, Value::I32(g.tensors.len() as i32))]
    };
    let out = cuts
        .windows(2)
        .enumerate()
        .map(|(no, r)| {
            let mut w = writer_like(&g);
            if no == 0 {
                g.metadata.iter().for_each(|(k, v)| _ = w.kv(k, v.clone()));
            }
            keys(no).into_iter().for_each(|(k, v)| _ = w.kv(k, v));
            for t in &g.tensors[r[0]..r[1]] {
                copy_tensor(&mut w, &g, bytes, t);
            }
            w.to_bytes()
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name("m-00002-of-00003.gguf"), Some(("m", 1, 3)));
        assert_eq!(parse_name("a-b-00001-of-00001.gguf"), Some(("a-b", 0, 1)));
        assert_eq!(parse_name("m-00004-of-00003.gguf"), None);
        assert_eq!(parse_name("m-0001-of-00003.gguf"), None);
        assert_eq!(parse_name("model.gguf"), None);
        assert_eq!(part_name("m", 2, 3), "m-00003-of-00003.gguf");
    }
}
