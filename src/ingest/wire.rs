//! Protobuf wire primitives over a borrowed byte slice: varints, tags and length-delimited
//! fields, every read bounds-checked. Errors say what was malformed, never panic.

use super::DecodeError;

pub const VARINT: u8 = 0;
pub const FIXED64: u8 = 1;
pub const LEN: u8 = 2;
pub const FIXED32: u8 = 5;

/// A cursor over one protobuf message's bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Offset of the cursor from the start of this reader's slice.
    #[inline]
    pub fn pos(&self) -> usize {
        self.pos
    }

    #[inline(always)]
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        // Fast path: one byte (tags, label lengths). Inlined; the rest is out of line.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(b as u64);
            }
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::Malformed("varint longer than 10 bytes"))
    }

    /// Reads a tag; returns (field number, wire type).
    #[inline]
    pub fn tag(&mut self) -> Result<(u32, u8), DecodeError> {
        let t = self.varint()?;
        let field = t >> 3;
        if field == 0 || field > u32::MAX as u64 >> 3 {
            return Err(DecodeError::Malformed("invalid field number"));
        }
        Ok((field as u32, (t & 7) as u8))
    }

    #[inline]
    pub fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let end = self.pos + 8;
        let b = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Reads a length-delimited field; returns its bytes and their offset in this reader's slice.
    #[inline]
    pub fn bytes(&mut self) -> Result<(&'a [u8], usize), DecodeError> {
        let len = self.varint()?;
        let start = self.pos;
        let end = start
            .checked_add(usize::try_from(len).map_err(|_| DecodeError::Truncated)?)
            .ok_or(DecodeError::Truncated)?;
        let b = self.buf.get(start..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok((b, start))
    }

    /// Skips a field of an unknown number (forward compatibility).
    pub fn skip(&mut self, wire_type: u8) -> Result<(), DecodeError> {
        match wire_type {
            VARINT => {
                self.varint()?;
            }
            FIXED64 => {
                self.fixed64()?;
            }
            LEN => {
                self.bytes()?;
            }
            FIXED32 => {
                let end = self.pos + 4;
                if end > self.buf.len() {
                    return Err(DecodeError::Truncated);
                }
                self.pos = end;
            }
            _ => return Err(DecodeError::Malformed("unsupported wire type (group)")),
        }
        Ok(())
    }
}

/// Checks a known field's wire type.
#[inline]
pub fn expect(msg: &'static str, field: u32, got: u8, want: u8) -> Result<(), DecodeError> {
    if got == want {
        Ok(())
    } else {
        Err(DecodeError::WireType {
            msg,
            field,
            got,
            want,
        })
    }
}
