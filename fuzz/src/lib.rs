//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! The targets take raw bytes (so that seeds are easy to write by hand or with
//! `make_seeds.py`); structured targets read their fields with [`Cursor`], which never fails:
//! past the end of the input every read returns zeros / empty slices.

use std::sync::OnceLock;

/// A forgiving reader over the fuzzer's input.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    pub fn u16(&mut self) -> u16 {
        let b = self.bytes(2);
        let mut a = [0u8; 2];
        a[..b.len()].copy_from_slice(b);
        u16::from_be_bytes(a)
    }

    pub fn u32(&mut self) -> u32 {
        let b = self.bytes(4);
        let mut a = [0u8; 4];
        a[..b.len()].copy_from_slice(b);
        u32::from_be_bytes(a)
    }

    pub fn u64(&mut self) -> u64 {
        let b = self.bytes(8);
        let mut a = [0u8; 8];
        a[..b.len()].copy_from_slice(b);
        u64::from_be_bytes(a)
    }

    pub fn i64(&mut self) -> i64 {
        self.u64() as i64
    }

    /// A slice preceded by a big-endian u16 length.
    pub fn chunk16(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.bytes(n)
    }

    /// A slice preceded by a one-byte length.
    pub fn chunk8(&mut self) -> &'a [u8] {
        let n = self.u8() as usize;
        self.bytes(n)
    }
}

/// Whether `LIVELENS_FUZZ_DEBUG` is set: targets then print what they parsed (to check seeds:
/// `LIVELENS_FUZZ_DEBUG=1 cargo +nightly fuzz run <t> corpus/<t>/<file> -j1 -- -runs=1`).
pub fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("LIVELENS_FUZZ_DEBUG").is_some())
}

/// Whether `LIVELENS_FUZZ_NO_BOUNDS` is set: the SPS targets then skip their "sane picture
/// size" assertions, to look past a known finding for other crashes.
pub fn no_bounds() -> bool {
    static NO_BOUNDS: OnceLock<bool> = OnceLock::new();
    *NO_BOUNDS.get_or_init(|| std::env::var_os("LIVELENS_FUZZ_NO_BOUNDS").is_some())
}

/// The largest picture side any H.264 or H.265 level allows: level 6.2's frame size limits
/// (H.264 MaxFS = 139 264 macroblocks → √(8·MaxFS) = 1055 MBs = 16 880 pixels; H.265
/// MaxLumaPs = 35 651 584 → √(8·MaxLumaPs) = 16 888 pixels).
pub const MAX_PICTURE_SIDE: u32 = 16_888;
