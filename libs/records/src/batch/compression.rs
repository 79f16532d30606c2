//! The four codecs Kafka batches use, byte-compatible with Kafka clients.
//!
//! - gzip: RFC 1952 members (several concatenated members are accepted).
//! - snappy: we write snappy-java's "xerial" framing as the Java producer
//!   does; we read both that and raw snappy (librdkafka writes raw).
//! - lz4: the LZ4 frame format with independent 64 KiB blocks (what Kafka's
//!   `KafkaLZ4BlockOutputStream` and librdkafka write).
//! - zstd: standard zstd frames, streamed because librdkafka omits the
//!   content size.

use std::io::{self, Read, Write};

use super::BatchError;

/// Upper bound on the records of one batch after decompression.
///
/// Guards against decompression bombs: Kafka's largest request is 100 MiB
/// (`socket.request.max.bytes`), and no legitimate batch inflates past this.
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 256 * 1024 * 1024;

/// snappy-java's stream header: magic, version 1, compatible version 1.
const XERIAL_HEADER: [u8; 16] = [
    0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
];
/// snappy-java's default block size.
const XERIAL_BLOCK_SIZE: usize = 32 * 1024;
/// Kafka's default zstd level (`compression.zstd.level`).
const ZSTD_LEVEL: i32 = 3;

/// A record batch compression codec (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Uncompressed.
    None,
    /// gzip (codec 1).
    Gzip,
    /// snappy (codec 2).
    Snappy,
    /// lz4 (codec 3).
    Lz4,
    /// zstd (codec 4).
    Zstd,
}

impl Compression {
    /// Every codec, in id order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec with this id in a batch's attributes.
    pub fn from_id(id: u8) -> Result<Compression, BatchError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            codec => return Err(BatchError::UnknownCompression { codec }),
        })
    }

    /// The codec's id in a batch's attributes.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Kafka's name for the codec (`compression.type` value).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Parses Kafka's codec name.
    pub fn from_name(name: &str) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Compresses `input` with `codec`, appending to `out`.
pub(super) fn compress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    let fail = |source| BatchError::Compression { codec, source };
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            enc.write_all(input).map_err(fail)?;
            enc.finish().map_err(fail)?;
        }
        Compression::Snappy => {
            out.extend_from_slice(&XERIAL_HEADER);
            let mut enc = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK_SIZE) {
                let len_at = out.len();
                out.extend_from_slice(&[0; 4]);
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(block.len()), 0);
                let n = enc
                    .compress(block, &mut out[start..])
                    .map_err(|e| fail(io::Error::other(e)))?;
                out.truncate(start + n);
                let n = u32::try_from(n).map_err(|e| fail(io::Error::other(e)))?;
                out[len_at..start].copy_from_slice(&n.to_be_bytes());
            }
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            enc.write_all(input).map_err(fail)?;
            enc.finish().map_err(|e| fail(io::Error::other(e)))?;
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).map_err(fail)?;
            enc.write_all(input).map_err(fail)?;
            enc.finish().map_err(fail)?;
        }
    }
    Ok(())
}

/// Decompresses a batch's records, refusing output over [`MAX_DECOMPRESSED_BATCH_BYTES`].
pub(super) fn decompress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, BatchError> {
    decompress_limited(codec, input, MAX_DECOMPRESSED_BATCH_BYTES)
}

fn decompress_limited(
    codec: Compression,
    input: &[u8],
    limit: usize,
) -> Result<Vec<u8>, BatchError> {
    let fail = |source| BatchError::Decompression { codec, source };
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(limit + 1));
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            read_limited(flate2::read::MultiGzDecoder::new(input), &mut out, limit).map_err(fail)?
        }
        Compression::Snappy => {
            if let Some(mut rest) = input.strip_prefix(&XERIAL_HEADER[..8]) {
                // Version and compatible version follow the magic; any values are accepted
                // as snappy-java does.
                rest = rest
                    .get(8..)
                    .ok_or_else(|| fail(truncated("xerial header")))?;
                while !rest.is_empty() {
                    let (len, tail) = rest
                        .split_at_checked(4)
                        .ok_or_else(|| fail(truncated("xerial block length")))?;
                    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
                    let (block, tail) = tail
                        .split_at_checked(len)
                        .ok_or_else(|| fail(truncated("xerial block")))?;
                    snappy_raw(block, &mut out, limit)?;
                    rest = tail;
                }
            } else {
                snappy_raw(input, &mut out, limit)?;
            }
        }
        Compression::Lz4 => {
            read_limited(lz4_flex::frame::FrameDecoder::new(input), &mut out, limit)
                .map_err(fail)?
        }
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(input).map_err(fail)?;
            read_limited(dec, &mut out, limit).map_err(fail)?
        }
    }
    if out.len() > limit {
        return Err(BatchError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

fn truncated(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("truncated {what}"))
}

/// Reads to the end, or to one byte past `limit` (which tells "exactly at the
/// limit" from "over it"), never letting `out` grow past that: `read_to_end`
/// would double its buffer and allocate up to twice the limit for a bomb.
fn read_limited(mut reader: impl Read, out: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    let cap = limit + 1;
    while out.len() < cap {
        let start = out.len();
        let want = start.max(64 * 1024).min(cap - start);
        out.reserve_exact(want);
        out.resize(start + want, 0);
        let mut filled = 0;
        while filled < want {
            match reader.read(&mut out[start + filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    out.truncate(start + filled);
                    return Err(e);
                }
            }
        }
        out.truncate(start + filled);
        if filled < want {
            break;
        }
    }
    Ok(())
}

/// Most output a raw snappy block can produce per input byte: its densest
/// element, a 3-byte copy, emits 64 bytes.
const SNAPPY_MAX_EXPANSION: usize = 22;

/// Decompresses one raw snappy block, checking the length it claims before
/// allocating for it.
fn snappy_raw(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), BatchError> {
    let fail = |source| BatchError::Decompression {
        codec: Compression::Snappy,
        source,
    };
    let n = snap::raw::decompress_len(block).map_err(|e| fail(io::Error::other(e)))?;
    if n > block.len().saturating_mul(SNAPPY_MAX_EXPANSION) {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("block of {} bytes claims {n} bytes of output", block.len()),
        )));
    }
    if out.len() + n > limit {
        return Err(BatchError::DecompressedTooLarge { limit });
    }
    let start = out.len();
    out.resize(start + n, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| fail(io::Error::other(e)))?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let input = sample();
        for codec in Compression::ALL {
            let mut out = Vec::new();
            compress(codec, &input, &mut out).unwrap();
            assert_eq!(decompress(codec, &out).unwrap(), input, "{codec}");
        }
    }

    #[test]
    fn lz4_frames_use_independent_64k_blocks() {
        let mut out = Vec::new();
        compress(Compression::Lz4, b"hello", &mut out).unwrap();
        assert_eq!(&out[..4], &[0x04, 0x22, 0x4d, 0x18], "lz4 frame magic");
        // FLG: version 01, independent blocks, no block or content checksum,
        // no content size: byte for byte the descriptor librdkafka writes
        // (see tests/data/kafka-batches/ck-lz4.bin).
        assert_eq!(out[4], 0x60, "FLG byte");
        assert_eq!(out[5], 0x40, "64 KiB max block size");
    }

    #[test]
    fn snappy_reads_raw_and_xerial() {
        let input = sample();
        let raw = snap::raw::Encoder::new().compress_vec(&input).unwrap();
        assert_eq!(decompress(Compression::Snappy, &raw).unwrap(), input);
        let mut framed = Vec::new();
        compress(Compression::Snappy, &input, &mut framed).unwrap();
        assert_eq!(&framed[..8], b"\x82SNAPPY\0");
        assert_eq!(decompress(Compression::Snappy, &framed).unwrap(), input);
    }

    #[test]
    fn output_over_the_limit_is_refused() {
        let input = vec![0u8; 1 << 20];
        for codec in Compression::ALL {
            let mut out = Vec::new();
            compress(codec, &input, &mut out).unwrap();
            let err = decompress_limited(codec, &out, 1000).unwrap_err();
            assert!(
                matches!(err, BatchError::DecompressedTooLarge { limit: 1000 }),
                "{codec}: {err}"
            );
        }
    }

    #[test]
    fn snappy_lengths_are_checked_before_allocating() {
        // Found while fuzzing: a raw snappy block whose length prefix claims
        // 256 MiB made the decoder allocate all of it first.
        let mut block = Vec::new();
        let mut claimed = (MAX_DECOMPRESSED_BATCH_BYTES - 1) as u64;
        while claimed >= 0x80 {
            block.push((claimed as u8) | 0x80);
            claimed >>= 7;
        }
        block.push(claimed as u8);
        block.extend_from_slice(&[0u8; 40]);
        let err = decompress(Compression::Snappy, &block).unwrap_err();
        assert!(matches!(err, BatchError::Decompression { .. }), "{err}");
        // The densest legitimate block, all zeros, is still accepted.
        let zeros = vec![0u8; 1 << 20];
        let packed = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
        assert!(
            packed.len() * SNAPPY_MAX_EXPANSION >= zeros.len(),
            "ratio {}",
            zeros.len() / packed.len()
        );
        assert_eq!(decompress(Compression::Snappy, &packed).unwrap(), zeros);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(
                decompress(codec, b"definitely not compressed").is_err(),
                "{codec}"
            );
        }
    }
}
