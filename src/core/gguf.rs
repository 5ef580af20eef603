//! GGUF reader (versions 2 and 3) over a byte slice.
//!
//! Layout (all little-endian):
//! ```text
//! magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
//! n_kv × (key: string, type: u32, value)
//! n_tensors × (name: string, n_dims u32, dims u64[n_dims], type u32, offset u64)
//! padding to `general.alignment` (default 32)
//! tensor data; tensor i lives at data_start + offset_i
//! string = len u64, bytes[len] (UTF-8)
//! ```
//! Every count and length is checked against the bytes that remain before anything is allocated,
//! so a hostile file can make the reader allocate at most a small multiple of its own size.

use std::collections::BTreeMap;

use crate::core::quant::GgmlType;
use crate::error::{Error, Result};

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Arrays inside arrays deeper than this are refused (real files use depth 1).
const MAX_ARRAY_DEPTH: u32 = 4;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
const MAX_NAME_LEN: u64 = 1 << 16;

/// One metadata value. Arrays keep their element type so that empty arrays stay typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(u32, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The GGUF value-type id.
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(..) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    pub fn type_name(&self) -> &'static str {
        type_name(self.type_id())
    }

    /// Any integer type that fits in u64 without loss.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// A short rendering for `inspect`: long arrays are summarised.
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) if s.chars().count() > 60 => {
                format!("{:?}… ({} chars)", s.chars().take(60).collect::<String>(), s.chars().count())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Array(t, v) => format!("[{}; {}]", type_name(*t), v.len()),
            Value::F32(x) => format!("{x}"),
            Value::F64(x) => format!("{x}"),
            Value::Bool(b) => format!("{b}"),
            other => other.as_u64().map(|v| v.to_string()).unwrap_or_else(|| format!("{other:?}")),
        }
    }
}

fn type_name(t: u32) -> &'static str {
    match t {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "unknown",
    }
}

/// Smallest encoded size of one value of type `t`, used to bound array counts.
fn min_value_size(t: u32) -> u64 {
    match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        _ => 8,
    }
}

/// Where one tensor lives and what it is. `dims[0]` is the innermost (contiguous) dimension:
/// a weight matrix with `rows` outputs of `cols` inputs has `dims = [cols, rows]`.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the tensor data section.
    pub offset: u64,
    /// Encoded size in bytes.
    pub size: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

#[derive(Debug)]
pub struct Gguf<'a> {
    pub version: u32,
    pub alignment: u64,
    pub metadata: BTreeMap<String, Value>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
    bytes: &'a [u8],
    /// Length of the whole file (`bytes` may be a prefix of it).
    pub file_len: u64,
}

/// The `n_kv` metadata pairs that follow the header; a key given twice is refused.
fn read_metadata(r: &mut Reader, n_kv: u64) -> Result<BTreeMap<String, Value>> {
    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = r.string(&|| format!("metadata key #{i}"))?;
        let t = r.u32(&|| format!("type of metadata key `{key}`"))?;
        let v = r.value(t, 0, &|| format!("metadata key `{key}`"))?;
        if metadata.insert(key.clone(), v).is_some() {
            return Err(Error::malformed(format!("metadata key `{key}`"), "appears twice"));
        }
    }
    Ok(metadata)
}

/// `general.alignment`, or the default: a power of two up to 1 MiB.
fn alignment_of(metadata: &BTreeMap<String, Value>) -> Result<u64> {
    Ok(match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
            _ => {
                return Err(Error::malformed(
                    "metadata key `general.alignment`",
                    format!("{} is not a power of two up to 1 MiB", v.summary()),
                ))
            }
        },
    })
}

/// Tensor info #`i`: name, shape, type and data offset, checked against the type's block size
/// and the alignment.
fn read_tensor_info(r: &mut Reader, i: u64, alignment: u64) -> Result<TensorInfo> {
    let name_len_pos = r.pos;
    let name = r.string(&|| format!("name of tensor #{i}"))?;
    if name.len() as u64 > MAX_NAME_LEN {
        return Err(Error::malformed(format!("tensor #{i} at offset {name_len_pos}"), "name longer than 64 KiB"));
    }
    let n_dims = r.u32(&|| format!("dimension count of tensor `{name}`"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(Error::malformed(format!("tensor `{name}`"), format!("has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        dims.push(r.u64(&|| format!("dimension {d} of tensor `{name}`"))?);
    }
    let raw_ty = r.u32(&|| format!("type of tensor `{name}`"))?;
    let offset = r.u64(&|| format!("offset of tensor `{name}`"))?;
    let ty = GgmlType::from_u32(raw_ty).ok_or_else(|| Error::UnsupportedType {
        name: name.clone(),
        ty: crate::core::quant::ggml_type_name(raw_ty),
        supported: crate::core::quant::supported_names(),
    })?;
    let n: u64 = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::malformed(format!("tensor `{name}`"), format!("shape {dims:?} overflows")))?;
    if n == 0 {
        return Err(Error::malformed(format!("tensor `{name}`"), format!("shape {dims:?} has no elements")));
    }
    if dims[0] % ty.block_elems() as u64 != 0 {
        return Err(Error::malformed(
            format!("tensor `{name}`"),
            format!("row length {} is not a multiple of the {:?} block of {}", dims[0], ty, ty.block_elems()),
        ));
    }
    let size = (n / ty.block_elems() as u64)
        .checked_mul(ty.block_bytes() as u64)
        .ok_or_else(|| Error::malformed(format!("tensor `{name}`"), "byte size overflows"))?;
    if offset % alignment != 0 {
        return Err(Error::malformed(
            format!("tensor `{name}`"),
            format!("data offset {offset} is not a multiple of the alignment {alignment}"),
        ));
    }
    Ok(TensorInfo { name, dims, ty, offset, size })
}

/// Every tensor's data lies inside the `data_len` bytes after the header, no two overlap, and
/// no name repeats.
fn check_layout(tensors: &[TensorInfo], data_len: u64) -> Result<()> {
    for t in tensors {
        let end = t.offset.checked_add(t.size);
        if end.is_none_or(|e| e > data_len) {
            return Err(Error::malformed(
                format!("tensor `{}`", t.name),
                format!("data [{}, {}) lies outside the {} bytes of tensor data", t.offset, t.offset as u128 + t.size as u128, data_len),
            ));
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for w in by_offset.windows(2) {
        if w[0].offset + w[0].size > w[1].offset {
            return Err(Error::malformed(format!("tensor `{}`", w[1].name), format!("data overlaps tensor `{}`", w[0].name)));
        }
    }
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::malformed(format!("tensor `{}`", w[0]), "appears twice"));
    }
    Ok(())
}

struct Reader<'a> {
    /// The file, or a prefix of it.
    bytes: &'a [u8],
    pos: usize,
    /// Length of the whole file.
    file_len: u64,
}

impl<'a> Reader<'a> {
    /// Bytes left in the whole file: the bound for every count, so that what is allocated is at
    /// most a small multiple of the file's size.
    fn remaining(&self) -> u64 {
        self.file_len.saturating_sub(self.pos as u64)
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(Error::Truncated { what: what(), offset: self.pos as u64, need: n, len: self.bytes.len() as u64 });
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        Ok(self.take(N as u64, what)?.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("{} (string length)", what()))?;
        let raw = self.take(len, &|| format!("{} (string of {len} bytes)", what()))?;
        String::from_utf8(raw.to_vec()).map_err(|_| Error::malformed(what(), "string is not valid UTF-8"))
    }

    fn value(&mut self, t: u32, depth: u32, what: &dyn Fn() -> String) -> Result<Value> {
        Ok(match t {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(Error::malformed(what(), format!("bool has byte value {b}"))),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::malformed(what(), format!("arrays nested deeper than {MAX_ARRAY_DEPTH}")));
                }
                let et = self.u32(what)?;
                if et > 12 {
                    return Err(Error::malformed(what(), format!("array element type {et} is unknown")));
                }
                let n = self.u64(what)?;
                // Each element needs at least min_value_size bytes: a count that cannot fit in
                // what is left of the file is refused before the Vec is allocated.
                if n.saturating_mul(min_value_size(et)) > self.remaining() {
                    return Err(Error::Truncated {
                        what: format!("{} (array of {n} {})", what(), type_name(et)),
                        offset: self.pos as u64,
                        need: n.saturating_mul(min_value_size(et)),
                        len: self.bytes.len() as u64,
                    });
                }
                let mut v = Vec::with_capacity(n as usize);
                for i in 0..n {
                    v.push(self.value(et, depth + 1, &|| format!("{}[{i}]", what()))?);
                }
                Value::Array(et, v)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            _ => return Err(Error::malformed(what(), format!("value type {t} is unknown"))),
        })
    }
}

impl<'a> Gguf<'a> {
    /// Parses the header, metadata and tensor table, and checks that every tensor's bytes lie
    /// inside the file, aligned, without overlapping another tensor.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        Self::parse_prefix(bytes, bytes.len() as u64)
    }

    /// Parses the header from `prefix`, the first bytes of a file of `file_len` bytes, so that a
    /// large file can be read piecewise. A prefix too short for the header gives
    /// `Error::Truncated`; tensor bounds are checked against `file_len`.
    pub fn parse_prefix(bytes: &'a [u8], file_len: u64) -> Result<Self> {
        if bytes.len() as u64 > file_len {
            return Err(Error::malformed("header", "prefix longer than the file"));
        }
        if bytes.len() < 4 {
            return Err(Error::Truncated { what: "magic".into(), offset: 0, need: 4, len: bytes.len() as u64 });
        }
        let magic: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
        if &magic != MAGIC {
            return Err(Error::BadMagic(magic));
        }
        let mut r = Reader { bytes, pos: 4, file_len };
        let version = r.u32(&|| "version".into())?;
        if !(2..=3).contains(&version) {
            return Err(Error::UnsupportedVersion(version));
        }
        let n_tensors = r.u64(&|| "tensor count".into())?;
        let n_kv = r.u64(&|| "metadata count".into())?;
        // A key-value pair is at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at
        // least 8 + 4 + 4 + 8.
        if n_kv.saturating_mul(13) > r.remaining() {
            return Err(Error::malformed("header", format!("metadata count {n_kv} cannot fit in a {file_len}-byte file")));
        }
        if n_tensors.saturating_mul(24) > r.remaining() {
            return Err(Error::malformed("header", format!("tensor count {n_tensors} cannot fit in a {file_len}-byte file")));
        }

        let metadata = read_metadata(&mut r, n_kv)?;
        let alignment = alignment_of(&metadata)?;
        let tensors = (0..n_tensors).map(|i| read_tensor_info(&mut r, i, alignment)).collect::<Result<Vec<_>>>()?;
        let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
        check_layout(&tensors, file_len.saturating_sub(data_offset))?;
        Ok(Gguf { version, alignment, metadata, tensors, data_offset, bytes, file_len })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key).ok_or_else(|| Error::MissingKey(key.into()))?;
        v.as_u64().ok_or(Error::WrongKeyType { key: key.into(), expected: "unsigned integer", found: v.type_name() })
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key).ok_or_else(|| Error::MissingKey(key.into()))?;
        v.as_f64().ok_or(Error::WrongKeyType { key: key.into(), expected: "number", found: v.type_name() })
    }

    pub fn str(&self, key: &str) -> Result<&str> {
        let v = self.get(key).ok_or_else(|| Error::MissingKey(key.into()))?;
        v.as_str().ok_or(Error::WrongKeyType { key: key.into(), expected: "string", found: v.type_name() })
    }

    /// A string array such as `tokenizer.ggml.tokens`.
    pub fn str_array(&self, key: &str) -> Result<Vec<&str>> {
        match self.get(key) {
            None => Err(Error::MissingKey(key.into())),
            Some(Value::Array(8, v)) => Ok(v.iter().map(|s| s.as_str().unwrap_or_default()).collect()),
            Some(v) => Err(Error::WrongKeyType { key: key.into(), expected: "array of strings", found: v.type_name() }),
        }
    }

    /// An integer array such as `tokenizer.ggml.token_type`.
    /// A number array as f32 (`tokenizer.ggml.scores`: f32, or i32 from some converters).
    pub fn f32_array(&self, key: &str) -> Result<Vec<f32>> {
        match self.get(key) {
            None => Err(Error::MissingKey(key.into())),
            Some(Value::Array(_, v)) => v
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<Vec<_>>>()
                .ok_or(Error::WrongKeyType { key: key.into(), expected: "array of numbers", found: "array" }),
            Some(v) => Err(Error::WrongKeyType { key: key.into(), expected: "array of numbers", found: v.type_name() }),
        }
    }

    pub fn int_array(&self, key: &str) -> Result<Vec<i64>> {
        match self.get(key) {
            None => Err(Error::MissingKey(key.into())),
            Some(Value::Array(_, v)) => v
                .iter()
                .map(|x| match *x {
                    Value::I64(i) => Some(i),
                    Value::I32(i) => Some(i as i64),
                    Value::I16(i) => Some(i as i64),
                    Value::I8(i) => Some(i as i64),
                    ref u => u.as_u64().and_then(|u| i64::try_from(u).ok()),
                })
                .collect::<Option<Vec<_>>>()
                .ok_or(Error::WrongKeyType { key: key.into(), expected: "array of integers", found: "array" }),
            Some(v) => Err(Error::WrongKeyType { key: key.into(), expected: "array of integers", found: v.type_name() }),
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Absolute byte range of a tensor's data in the file (checked against the file's length).
    pub fn tensor_range(&self, t: &TensorInfo) -> std::ops::Range<u64> {
        let start = self.data_offset + t.offset;
        start..start + t.size
    }

    /// The encoded bytes of a tensor, when the whole file was parsed.
    pub fn tensor_data(&self, t: &TensorInfo) -> Result<&'a [u8]> {
        let r = self.tensor_range(t);
        self.bytes
            .get(r.start as usize..r.end as usize)
            .ok_or_else(|| Error::malformed(format!("tensor `{}`", t.name), "data is not in the parsed part of the file"))
    }

    /// Bytes after the header: the prefix of the file that the header parse needs.
    pub fn header_len(&self) -> u64 {
        self.data_offset
    }
}

/// Builds GGUF files in memory: used by the tests (synthetic models, malformed files) and fuzzing.
#[derive(Default)]
pub struct Writer {
    pub version: u32,
    pub alignment: u64,
    kv: Vec<(String, Value)>,
    /// Name, dims, type, data.
    tensors: Vec<(String, Vec<u64>, u32, Data)>,
}

/// A tensor's data in a `Writer`: bytes shared, so that a large synthetic model can repeat its
/// layers' bytes without holding each copy, or only a length of zeros (`Writer::tensor_zeros`).
enum Data {
    Bytes(std::sync::Arc<[u8]>),
    Zeros(u64),
}

impl Data {
    fn len(&self) -> u64 {
        match self {
            Data::Bytes(b) => b.len() as u64,
            Data::Zeros(n) => *n,
        }
    }
}

impl Writer {
    pub fn new() -> Self {
        Writer { version: 3, alignment: DEFAULT_ALIGNMENT, ..Default::default() }
    }

    pub fn kv(&mut self, key: &str, v: Value) -> &mut Self {
        self.kv.push((key.into(), v));
        self
    }

    /// `dims[0]` innermost; `data` is the encoded bytes.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> &mut Self {
        self.tensor_shared(name, dims, ty, data.into())
    }

    /// `tensor` with data that other tensors (or the caller) may share.
    pub fn tensor_shared(&mut self, name: &str, dims: &[u64], ty: u32, data: std::sync::Arc<[u8]>) -> &mut Self {
        self.tensors.push((name.into(), dims.to_vec(), ty, Data::Bytes(data)));
        self
    }

    /// A tensor of `bytes` zero bytes, never held in memory: `write_sparse` leaves it a hole in
    /// the file (a header-sized file on disk however large the model; for tests of size limits).
    pub fn tensor_zeros(&mut self, name: &str, dims: &[u64], ty: u32, bytes: u64) -> &mut Self {
        self.tensors.push((name.into(), dims.to_vec(), ty, Data::Zeros(bytes)));
        self
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn put_value(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::U8(x) => out.push(*x),
            Value::I8(x) => out.push(*x as u8),
            Value::U16(x) => out.extend(x.to_le_bytes()),
            Value::I16(x) => out.extend(x.to_le_bytes()),
            Value::U32(x) => out.extend(x.to_le_bytes()),
            Value::I32(x) => out.extend(x.to_le_bytes()),
            Value::F32(x) => out.extend(x.to_le_bytes()),
            Value::Bool(x) => out.push(*x as u8),
            Value::String(s) => Self::put_str(out, s),
            Value::Array(t, items) => {
                out.extend(t.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for i in items {
                    Self::put_value(out, i);
                }
            }
            Value::U64(x) => out.extend(x.to_le_bytes()),
            Value::I64(x) => out.extend(x.to_le_bytes()),
            Value::F64(x) => out.extend(x.to_le_bytes()),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out).expect("writing to a Vec cannot fail");
        out
    }

    /// Writes the file to `out` as it goes: the header, then each tensor's data at its aligned
    /// offset (a file larger than memory is never built whole).
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let zeros = vec![0u8; 1 << 20];
        self.write_with(out, |out, mut n| {
            while n > 0 {
                let k = n.min(zeros.len() as u64);
                out.write_all(&zeros[..k as usize])?;
                n -= k;
            }
            Ok(())
        })
        .map(|_| ())
    }

    /// `write_to` a file, where zeros (padding, `tensor_zeros`) are skipped over, not written:
    /// holes in a sparse file.
    pub fn write_sparse(&self, f: &mut std::fs::File) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let end = self.write_with(f, |f, n| f.seek(SeekFrom::Current(n as i64)).map(|_| ()))?;
        f.set_len(end)
    }

    /// The header alone (through the padding before the data) and the whole file's length: of a
    /// writer whose tensors are all `tensor_zeros`, a description of a file laid out elsewhere.
    pub fn header(&self) -> (Vec<u8>, u64) {
        let mut head = Vec::new();
        let len = self.write_with(&mut head, |_, _| Ok(())).expect("writing to a Vec cannot fail");
        (head, len)
    }

    /// The file through `out`, with `skip(out, n)` putting n zero bytes; returns its length.
    fn write_with<W: std::io::Write>(&self, out: &mut W, mut skip: impl FnMut(&mut W, u64) -> std::io::Result<()>) -> std::io::Result<u64> {
        let mut head = Vec::new();
        head.extend(MAGIC);
        head.extend(self.version.to_le_bytes());
        head.extend((self.tensors.len() as u64).to_le_bytes());
        head.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            Self::put_str(&mut head, k);
            head.extend(v.type_id().to_le_bytes());
            Self::put_value(&mut head, v);
        }
        let a = self.alignment.max(1);
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            Self::put_str(&mut head, name);
            head.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                head.extend(d.to_le_bytes());
            }
            head.extend(ty.to_le_bytes());
            head.extend(offset.to_le_bytes());
            offset = (offset + data.len()).div_ceil(a) * a;
        }
        let start = (head.len() as u64).div_ceil(a) * a;
        head.resize(start as usize, 0);
        out.write_all(&head)?;
        let mut at = 0u64;
        for (_, _, _, data) in &self.tensors {
            let aligned = at.div_ceil(a) * a;
            skip(out, aligned - at)?;
            match data {
                Data::Bytes(b) => out.write_all(b)?,
                Data::Zeros(n) => skip(out, *n)?,
            }
            at = aligned + data.len();
        }
        Ok(start + at)
    }
}

/// Where a model's bytes come from: the whole file in memory natively, or a buffer outside the
/// wasm heap in the browser, read piecewise so that the heap never holds a second full copy.
pub trait ByteSource {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Replaces `out`'s contents with the bytes in `range` (within `len()`).
    fn read(&mut self, range: std::ops::Range<u64>, out: &mut Vec<u8>) -> Result<()>;
}

impl ByteSource for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read(&mut self, range: std::ops::Range<u64>, out: &mut Vec<u8>) -> Result<()> {
        let s = self.get(range.start as usize..range.end as usize).ok_or_else(|| Error::Io(format!("read of {range:?} past the end")))?;
        out.clear();
        out.extend_from_slice(s);
        Ok(())
    }
}

/// A source that tells `on_read(got, total)` how many of its `total` bytes have been read so far
/// (a load's progress: the header, then each tensor in turn), every `REPORT_MS` from `REPORT_MS`
/// after it is made, and on the last byte: a load shorter than that (a small model) reports
/// nothing, and costs the page nothing.
pub struct Reporting<'s, 'f> {
    src: &'s mut dyn ByteSource,
    got: u64,
    last_ms: f64,
    on_read: &'f mut dyn FnMut(u64, u64),
}

impl<'s, 'f> Reporting<'s, 'f> {
    pub const REPORT_MS: f64 = 250.0;

    pub fn new(src: &'s mut dyn ByteSource, on_read: &'f mut dyn FnMut(u64, u64)) -> Self {
        Reporting { src, got: 0, last_ms: crate::clock::now_ms(), on_read }
    }
}

impl ByteSource for Reporting<'_, '_> {
    fn len(&self) -> u64 {
        self.src.len()
    }

    fn read(&mut self, range: std::ops::Range<u64>, out: &mut Vec<u8>) -> Result<()> {
        self.src.read(range.clone(), out)?;
        let total = self.src.len();
        self.got = (self.got + (range.end - range.start)).min(total);
        let now = crate::clock::now_ms();
        if now - self.last_ms >= Self::REPORT_MS || range.end == total {
            self.last_ms = now;
            (self.on_read)(self.got, total);
        }
        Ok(())
    }
}

/// A file on disk read where asked (natively): the CLI never holds a whole model file.
#[cfg(not(target_arch = "wasm32"))]
pub struct FileSource {
    file: std::fs::File,
    len: u64,
}

#[cfg(not(target_arch = "wasm32"))]
impl FileSource {
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok(FileSource { file, len })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ByteSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&mut self, range: std::ops::Range<u64>, out: &mut Vec<u8>) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        if range.end > self.len || range.start > range.end {
            return Err(Error::Io(format!("read of {range:?} past the end of the file ({} bytes)", self.len)));
        }
        out.resize((range.end - range.start) as usize, 0);
        self.file
            .seek(SeekFrom::Start(range.start))
            .and_then(|_| self.file.read_exact(out))
            .map_err(|e| Error::Io(format!("reading {range:?}: {e}")))
    }
}

/// Reads just enough of `src` to parse the header (doubling from 1 MiB); returns the header bytes,
/// from which `Gguf::parse_prefix(&header, src.len())` is made.
pub fn read_header(src: &mut dyn ByteSource) -> Result<Vec<u8>> {
    let len = src.len();
    let mut n = len.min(1 << 20);
    let mut buf = Vec::new();
    loop {
        src.read(0..n, &mut buf)?;
        match Gguf::parse_prefix(&buf, len) {
            Ok(g) => {
                let h = g.header_len().min(n);
                buf.truncate(h as usize);
                return Ok(buf);
            }
            Err(Error::Truncated { .. }) if n < len => n = (n * 2).min(len),
            Err(e) => return Err(e),
        }
    }
}
