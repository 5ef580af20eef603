//! Split GGUF files, as llama.cpp's `llama-gguf-split` writes them and big models are published:
//! `PREFIX-00001-of-00003.gguf` … `PREFIX-00003-of-00003.gguf`, each a GGUF with its own header
//! and tensor table listing its own tensors (offsets within its own data section). The first
//! part holds all the metadata; every part holds `split.no` (u16, 0-based), `split.count` (u16)
//! and `split.tensors.count` (i32: the tensors of all parts together).
//!
//! `Joined` reads a set as one model without joining it in memory: a header made of the first
//! part's metadata (less the `split.*` keys) and every part's tensors in order, checked part by
//! part, each tensor's bytes read from its own part when asked for; `split` writes a set
//! (`kvscope split`).

use std::ops::Range;

use crate::core::gguf::{read_header, ByteSource, Gguf, Value, Writer};
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

/// Refuses a part of a split set given as a whole model (a set read through `Joined` has no
/// `split.*` keys left): where the parts are given by name, `open_model` names what is missing.
pub fn check_whole(g: &Gguf) -> Result<()> {
    let (no, count) = split_keys(g)?;
    if count == 1 {
        return Ok(());
    }
    let which = if no == 0 { "the first" } else { "a later" };
    Err(Error::MissingPart {
        name: format!("{} of {count}", no + 1),
        why: format!(
            "{which} part of a split model was given alone: give every part together (NAME-00001-of-{count:05}.gguf … NAME-{count:05}-of-{count:05}.gguf), or the first part's URL"
        ),
    })
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

/// A split set as one GGUF file, read through its parts: the file a join would write, whose
/// header is held and whose tensors' bytes are read from the parts when asked for.
pub struct Joined<'a> {
    /// The joined file's header (through the padding before its data).
    header: Vec<u8>,
    len: u64,
    /// The joined file's tensors in its order: where each lies in it, and in which part where.
    pieces: Vec<Piece>,
    parts: Vec<Box<dyn ByteSource + 'a>>,
    scratch: Vec<u8>,
}

struct Piece {
    at: Range<u64>,
    part: usize,
    from: u64,
}

/// A source of one part, by index (1.. for the parts after the first) and name.
pub type OpenPart<'f, 'a> = dyn FnMut(usize, &str) -> Result<Box<dyn ByteSource + 'a>> + 'f;

impl<'a> Joined<'a> {
    /// The model whose first file is `first` (named `name`): a single file as it is, a split
    /// set's first part with parts 2.. from `open_part`. Reads every part's header only, and
    /// checks each part's `split.no` and `split.count`, that no tensor repeats, and that the
    /// parts hold `split.tensors.count` tensors; a part missing or out of place is named
    /// (`MissingPart`).
    pub fn open(mut first: Box<dyn ByteSource + 'a>, name: &str, open_part: &mut OpenPart<'_, 'a>) -> Result<Self> {
        let head = read_header(&mut *first)?;
        let g = Gguf::parse_prefix(&head, first.len())?;
        let count = parts_of(&g, name)?;
        let mut w = writer_like(&g);
        for (k, v) in g.metadata.iter().filter(|(k, _)| count == 1 || !k.starts_with("split.")) {
            w.kv(k, v.clone());
        }
        let mut names = std::collections::BTreeSet::new();
        let mut sources = Vec::new();
        let mut add = |w: &mut Writer, g: &Gguf, part: usize| -> Result<()> {
            for t in &g.tensors {
                if !names.insert(t.name.clone()) {
                    return Err(Error::malformed(format!("tensor `{}`", t.name), "appears in two parts of the split model"));
                }
                w.tensor_zeros(&t.name, &t.dims, t.ty.id(), t.size);
                sources.push((part, g.tensor_range(t).start));
            }
            Ok(())
        };
        add(&mut w, &g, 0)?;
        let mut parts = vec![first];
        let prefix = parse_name(name).map_or("", |p| p.0);
        for i in 1..count {
            let part = part_name(prefix, i, count);
            let missing = |why: String| Error::MissingPart { name: part.clone(), why };
            let mut src = open_part(i, &part).map_err(|e| missing(format!("part {} of {count} cannot be read: {e}", i + 1)))?;
            let head = read_header(&mut *src).map_err(|e| missing(e.to_string()))?;
            let p = Gguf::parse_prefix(&head, src.len()).map_err(|e| missing(e.to_string()))?;
            let (no, n) = split_keys(&p)?;
            if (no, n) != (i, count) {
                return Err(missing(format!("it says it is part {} of {n}, where part {} of {count} belongs", no + 1, i + 1)));
            }
            add(&mut w, &p, i)?;
            parts.push(src);
        }
        if let Some(v) = g.get(SPLIT_TENSORS).filter(|_| count > 1) {
            if v.as_u64() != Some(names.len() as u64) {
                return Err(Error::MissingPart {
                    name: name.into(),
                    why: format!(
                        "the set should hold {} tensors (`{SPLIT_TENSORS}`) but its {count} parts hold {}",
                        v.summary(),
                        names.len()
                    ),
                });
            }
        }
        let (header, len) = w.header();
        let joined = Gguf::parse_prefix(&header, len)?;
        let pieces = joined.tensors.iter().zip(sources).map(|(t, (part, from))| Piece { at: joined.tensor_range(t), part, from }).collect();
        Ok(Joined { header, len, pieces, parts, scratch: Vec::new() })
    }
}

impl ByteSource for Joined<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    /// A tensor's bytes come straight from its part; any other range is put together from the
    /// header, the tensors it covers and zeros between them.
    fn read(&mut self, range: Range<u64>, out: &mut Vec<u8>) -> Result<()> {
        if range.end > self.len || range.start > range.end {
            return Err(Error::Io(format!("read of {range:?} past the end of the joined model ({} bytes)", self.len)));
        }
        let first = self.pieces.partition_point(|p| p.at.end <= range.start);
        if let Some(p) = self.pieces.get(first).filter(|p| p.at == range) {
            return self.parts[p.part].read(p.from..p.from + (range.end - range.start), out);
        }
        out.clear();
        out.resize((range.end - range.start) as usize, 0);
        let h = self.header.len() as u64;
        if range.start < h {
            let end = range.end.min(h);
            out[..(end - range.start) as usize].copy_from_slice(&self.header[range.start as usize..end as usize]);
        }
        for p in self.pieces[first..].iter().take_while(|p| p.at.start < range.end) {
            let (lo, hi) = (p.at.start.max(range.start), p.at.end.min(range.end));
            let from = p.from + (lo - p.at.start);
            self.parts[p.part].read(from..from + (hi - lo), &mut self.scratch)?;
            out[(lo - range.start) as usize..(hi - range.start) as usize].copy_from_slice(&self.scratch);
        }
        Ok(())
    }
}

/// The model whose first file is `first` (named `name`): that file itself where it is not the
/// first part of a split set, else the set `Joined` (parts 2.. from `open_part`).
pub fn open_model<'a>(
    mut first: Box<dyn ByteSource + 'a>,
    name: &str,
    open_part: &mut OpenPart<'_, 'a>,
) -> Result<Box<dyn ByteSource + 'a>> {
    let head = read_header(&mut *first)?;
    let g = Gguf::parse_prefix(&head, first.len())?;
    if split_keys(&g)? == (0, 1) {
        return Ok(first);
    }
    Ok(Box::new(Joined::open(first, name, open_part)?))
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
