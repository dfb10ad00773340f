//! A forgiving reader over a fuzz input.
//!
//! The targets take raw bytes (so that seeds are easy to write by hand or with
//! `fuzz/make_seeds.py`); structured targets read their fields with [`Cursor`], which never
//! fails: past the end of the input every read returns zeros / empty slices.

/// A forgiving reader over the fuzzer's input: reads past the end give zeros / empty slices.
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

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn reads_past_the_end_give_zeros() {
        let mut c = Cursor::new(&[0x01, 0x02, 0x01, 0x7f, 0x00, 0x03, 0xaa]);
        assert_eq!(c.u16(), 0x0102);
        assert_eq!(c.chunk8(), &[0x7f]);
        assert_eq!(c.chunk16(), &[0xaa]);
        assert!(c.is_empty());
        assert_eq!((c.u8(), c.bool(), c.u64(), c.i64()), (0, false, 0, 0));
        assert_eq!((c.chunk16(), c.rest()), (&[][..], &[][..]));
        assert_eq!(Cursor::new(&[0xaa, 0xbb]).u32(), 0xaabb_0000);
    }
}
