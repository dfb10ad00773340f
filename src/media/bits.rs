//! A bit reader for RBSP (emulation prevention already removed): fixed-width fields and
//! Exp-Golomb codes, as H.264/H.265 parameter sets use them. Reading past the end is an error,
//! never a panic.

pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBits;

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    pub fn bit(&mut self) -> Result<u32, OutOfBits> {
        let byte = *self.data.get(self.pos / 8).ok_or(OutOfBits)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(bit as u32)
    }

    pub fn bits(&mut self, n: u32) -> Result<u32, OutOfBits> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), OutOfBits> {
        if self.pos + n > self.data.len() * 8 {
            return Err(OutOfBits);
        }
        self.pos += n;
        Ok(())
    }

    /// ue(v)
    pub fn ue(&mut self) -> Result<u32, OutOfBits> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(OutOfBits);
            }
        }
        Ok(((1u64 << zeros) - 1 + self.bits(zeros)? as u64) as u32)
    }

    /// se(v)
    pub fn se(&mut self) -> Result<i32, OutOfBits> {
        let k = self.ue()? as i64;
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) } as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 → ue 0, 1, 2, 3, 4
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data);
        for want in 0..5 {
            assert_eq!(r.ue().unwrap(), want);
        }
        let mut r = BitReader::new(&[0b0100_1100]);
        assert_eq!(r.se().unwrap(), 1); // 010 → 1
        assert_eq!(r.se().unwrap(), -1); // 011 → -1
        assert!(BitReader::new(&[0]).ue().is_err());
    }
}
