//! Zigzag varints as Kafka's record format uses them (protobuf-style base-128,
//! sign folded into the low bit).

use super::BatchError;

/// Bytes a zigzag varint of `value` occupies.
pub(crate) fn size(value: i64) -> usize {
    let mut v = zigzag(value);
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Appends `value` as a zigzag varint.
pub(crate) fn write(out: &mut Vec<u8>, value: i64) {
    let mut v = zigzag(value);
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a zigzag varint of at most 10 bytes from `buf[*pos..]`, advancing `pos`.
#[inline]
pub(crate) fn read_i64(buf: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
    // Validation reads every field of every record; nearly all of them
    // (deltas, lengths under 8 KiB, header counts) take one or two bytes.
    match buf.get(*pos..) {
        Some(&[b0, ..]) if b0 < 0x80 => {
            *pos += 1;
            Ok(unzigzag(u64::from(b0)))
        }
        Some(&[b0, b1, ..]) if b1 < 0x80 => {
            *pos += 2;
            Ok(unzigzag(u64::from(b0 & 0x7f) | u64::from(b1) << 7))
        }
        _ => read_long(buf, pos),
    }
}

fn unzigzag(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

/// [`read_i64`] for varints of three bytes or more, and for errors.
#[cold]
#[inline(never)]
fn read_long(buf: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
    let mut raw: u64 = 0;
    let mut shift = 0u32;
    loop {
        let Some(&byte) = buf.get(*pos) else {
            return Err(BatchError::MalformedRecord {
                reason: "varint runs past the end of the records",
            });
        };
        *pos += 1;
        if shift == 63 && byte > 1 {
            return Err(BatchError::MalformedRecord {
                reason: "varint overflows 64 bits",
            });
        }
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(BatchError::MalformedRecord {
                reason: "varint longer than 10 bytes",
            });
        }
    }
    Ok(unzigzag(raw))
}

/// Reads a zigzag varint that must fit Kafka's 32-bit `varint` type.
#[inline]
pub(crate) fn read_i32(buf: &[u8], pos: &mut usize) -> Result<i32, BatchError> {
    let v = read_i64(buf, pos)?;
    i32::try_from(v).map_err(|_| BatchError::MalformedRecord {
        reason: "varint does not fit 32 bits",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edge_values() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut buf = Vec::new();
            write(&mut buf, v);
            assert_eq!(buf.len(), size(v), "size of {v}");
            let mut pos = 0;
            assert_eq!(read_i64(&buf, &mut pos).unwrap(), v);
            assert_eq!(pos, buf.len());
        }
    }

    #[test]
    fn one_two_and_three_byte_varints_read_back_anywhere_in_a_buffer() {
        // Around the one-, two- and three-byte boundaries (the fast paths).
        for v in -20_000i64..20_000 {
            let mut buf = vec![0xaa];
            write(&mut buf, v);
            let mut pos = 1;
            assert_eq!(read_i64(&buf, &mut pos).unwrap(), v);
            assert_eq!(pos, buf.len());
            // Cut short by one byte, it is an error, never a wrong value.
            let mut pos = 1;
            assert!(read_i64(&buf[..buf.len() - 1], &mut pos).is_err());
        }
    }

    #[test]
    fn known_encodings_match_kafka() {
        // From Kafka's ByteUtilsTest: zigzag varint encodings.
        let cases: [(i64, &[u8]); 5] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
        ];
        for (v, bytes) in cases {
            let mut buf = Vec::new();
            write(&mut buf, v);
            assert_eq!(buf, bytes, "encoding of {v}");
        }
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        let mut pos = 0;
        assert!(read_i64(&[0x80], &mut pos).is_err());
        let mut pos = 0;
        assert!(read_i64(&[0xff; 11], &mut pos).is_err());
        let mut pos = 0;
        let mut buf = Vec::new();
        write(&mut buf, i64::from(i32::MAX) + 1);
        assert!(read_i32(&buf, &mut pos).is_err());
    }
}
