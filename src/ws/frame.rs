//! The frame format (RFC 6455 §5.2): headers, masking, masking keys.

use std::cell::RefCell;

/// The largest frame header: 2 + 8 (length) + 4 (mask) bytes.
pub(super) const MAX_HEADER: usize = 14;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
}

impl Header {
    /// The header at the front of `buf` and its size, or `None` if `buf`
    /// does not hold all of it yet.
    pub fn parse(buf: &[u8]) -> Option<(Header, usize)> {
        let (&b0, &b1) = (buf.first()?, buf.get(1)?);
        let (len, mut at) = match b1 & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
                4,
            ),
            127 => {
                let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = if b1 & 0x80 != 0 {
            let key: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
            at += 4;
            Some(key)
        } else {
            None
        };
        let header = Header {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x07,
            opcode: b0 & 0x0f,
            mask,
            len,
        };
        Some((header, at))
    }
}

/// The size of the length field after the first two bytes of a header
/// for a payload of `len` bytes, in its shortest form.
pub(super) fn extended_len_size(len: usize) -> usize {
    match len {
        n if n < 126 => 0,
        n if n <= 0xffff => 2,
        _ => 8,
    }
}

/// XOR `buf` with the masking key (RFC 6455 §5.3), eight bytes at a time.
pub(super) fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    // The key twice over, in either byte order: [k0 k1 k2 k3 k0 k1 k2 k3].
    let k = u64::from(u32::from_ne_bytes(key)) * 0x1_0000_0001;
    let (words, rest) = buf.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_ne_bytes(*w) ^ k).to_ne_bytes();
    }
    // `rest` starts at a multiple of 8, so the key lines up again at 0.
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// Masking keys drawn ahead, per thread: 64 bytes, 16 keys.
const KEYS: usize = 16;

thread_local! {
    /// Keys from the thread's CSPRNG not yet used, and how many are used.
    static MASK_KEYS: RefCell<([[u8; 4]; KEYS], usize)> = const { RefCell::new(([[0; 4]; KEYS], KEYS)) };
}

/// A fresh, unpredictable masking key (RFC 6455 §5.3), from the thread's
/// CSPRNG as tungstenite draws them, but 16 at a time: a draw per frame
/// cost about 100 instructions, this about 50 (`bench/callgrind`). Each
/// key is handed out once.
pub(super) fn mask_key() -> [u8; 4] {
    MASK_KEYS.with(|k| {
        let (keys, used) = &mut *k.borrow_mut();
        if *used == KEYS {
            rand::fill(keys.as_flattened_mut());
            *used = 0;
        }
        let key = keys[*used];
        *used += 1;
        key
    })
}
